//! The durable queues and what drains them: the callback [`inbox`], the [`outbox`] of intents for
//! WeCom, the shared [`worker`] machinery (leases, retries, the pool) and the [`jobs`] table of
//! long-running work. Items are opaque here: the domain and app layers give them meaning.

pub mod inbox;
pub mod jobs;
pub mod outbox;
pub mod worker;
