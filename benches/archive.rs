//! Chat-archive benchmark (being written).
fn main() {}
