//! The WeCom (企业微信) protocol and nothing else: callback crypto, the callback envelope and
//! message header, typed callback events, and the
//! sender side (signed requests exactly as WeCom sends them) for self-tests, benchmarks and tests.
//!
//! No database and no web framework live here; the server crate builds on these types.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod api;
pub mod archive;
pub mod coord;
pub mod crypto;
pub mod envelope;
pub mod event;
pub mod ids;
pub mod jssdk;
pub mod secret;
pub mod sender;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod xml;

pub use api::{ApiConfig, ApiError, AppCredentials, WecomClient};
pub use coord::{CoordError, Coordinator, MemoryCoordinator};
pub use crypto::{CallbackCrypto, CryptoError, Decrypted};
pub use envelope::{
    Envelope, EnvelopeError, MessageHeader, parse_envelope, parse_header, parse_header_str,
};
pub use event::{CallbackEvent, EventError, ParsedEvent, parse_event};
pub use ids::{ChatId, CorpId, ExternalUserId, IdError, TagId, UserId};
pub use secret::Secret;
