//! The decrypted message JSON of §5.4 (being written).
