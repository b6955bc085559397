//! The content scanner on one core (issue 6).
fn main() {}
