//! Text normalization with an offset map back to the original.
