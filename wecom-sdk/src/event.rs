//! Typed callback events.
