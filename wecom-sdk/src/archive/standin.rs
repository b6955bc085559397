//! The stand-in payload scheme (being written).
