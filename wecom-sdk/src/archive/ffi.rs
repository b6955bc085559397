//! The library loader (being written).
