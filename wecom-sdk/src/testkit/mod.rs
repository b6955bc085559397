//! The WeCom emulator (feature `testkit`): WeCom's side of the server API and of callbacks, for
//! tests, benchmarks and `scrm emulator`.
//!
//! It is an independent implementation of the protocol reference (`shared/wecom-protocol.md`
//! §2–§4), written against WeCom's JSON and XML rather than against this crate's API client, so
//! that a bug in one cannot hide a bug in the other. What it does:
//!
//! * **Server API** under `/cgi-bin/` ([`EmulatorHandle::base_url`]): `gettoken` and per-app
//!   tokens that expire on the emulator clock, the 客户联系 read and write APIs, group chats,
//!   transfers (on-job and resigned, with the 24 h takeover), `user/get`, `department/list`,
//!   `message/send`, `msgaudit/get_permit_user_list` and the JS-SDK tickets. Errors are HTTP 200
//!   with WeCom's `errcode` and an `errmsg` in WeCom's style (`…, hint: […], more info at …`).
//! * **Limits** of §4.7/§4.8 ([`EmulatorLimits`]): per corp and API per minute and hour (45009), per
//!   API concurrency (45033), message/send per app and member (silently dropped), 3000 corp tags,
//!   100 customers or chats per transfer call, two on-job transfers per customer in 90 days.
//!   `message/send` honours `enable_duplicate_check` ([`EmulatorState::duplicates_suppressed`]).
//! * **Eventual consistency**: [`EmulatorConfig::consistency_delay`] hides new relations.
//! * **Faults** ([`Fault`], [`FaultKind`], [`EmulatorState::set_down`]) for retry logic.
//! * **Callbacks**: every mutation of [`EmulatorState`] that WeCom would call back for pushes the
//!   plaintext XML of §3, signed and encrypted for the configured [`CallbackTarget`], with WeCom's
//!   5 s deadline and three retries; [`DeliveryMode`] duplicates, reorders or drops events.
//! * **Inspection**: calls per API, rate-limit answers, sent, dropped and suppressed messages,
//!   deliveries, relations and transfers, also over HTTP under `/testkit/` (see [`admin`]).
//! * **Write log** ([`EmulatorState::writes`], [`WriteRecord`]): when each successful write call
//!   changed the state, in real time, with its request body — for measuring how long a change
//!   takes to reach WeCom. The newest [`MAX_WRITES`] are kept.
//! * **Chat archive** (会话内容存档, §5): the backend of WeCom's closed library, played for the
//!   stand-in library `wecom-sdk/finance-standin` at `POST /finance/chatdata` and
//!   `POST /finance/media` (outside `/cgi-bin/`, in the private format of
//!   [`crate::archive::standin`]; point the stand-in at [`EmulatorHandle::addr`] with
//!   [`crate::archive::standin::STANDIN_URL_ENV`]). Per corp: the archive secret
//!   ([`EmulatorState::set_archive_secret`]), public keys by version
//!   ([`EmulatorState::add_archive_public_key`]), records by seq, pushed as decrypted JSON
//!   ([`EmulatorState::archive_push`], [`EmulatorState::archive_text`]) or made up on demand for
//!   benchmarks ([`EmulatorState::archive_synthetic`]), sealed when served with a fresh key;
//!   media in 512 KiB chunks ([`EmulatorState::archive_add_media`]); the 5-day retention on the
//!   emulator clock; and the library's failure modes ([`ArchiveFault`]: crash, hang, leak, a
//!   return code, an errcode, a damaged payload).
//!
//! Time: business time (token expiry, consistency delay, transfer windows, `CreateTime`) runs on
//! the emulator clock ([`EmulatorState::now`], [`EmulatorState::advance_clock`]); rate-limit windows
//! and the callback signature `timestamp` use real time (windows aligned to the Unix epoch), so a
//! client's own limiter agrees with the emulator and a receiver's timestamp check still passes
//! after the clock was advanced.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use wecom_sdk::testkit::{Emulator, EmulatorConfig, SeedSpec};
//!
//! let emulator = Emulator::start(EmulatorConfig::default()).await?;
//! let state = emulator.state();
//! state.add_app("ww1436e0e65a779aee", "contact-secret", None);
//! let seeded = state.seed("ww1436e0e65a779aee", &SeedSpec::default());
//! let url = format!("{}gettoken?corpid=ww1436e0e65a779aee&corpsecret=contact-secret", emulator.base_url());
//! # let _ = (seeded, url);
//! # Ok(()) }
//! ```
//!
//! # Assumptions
//!
//! Where WeCom publishes no behaviour, the emulator picks one:
//!
//! * Callbacks: retries come `callback_retry_interval` apart, each with a fresh `timestamp`
//!   (real time) and `nonce`; `CreateTime` is the emulator clock. `create_user` carries only
//!   `UserID` and `Department` (contact-sync URLs configured after 2022-08-15). `msgaudit_notify`
//!   is pushed at most once per 15 s of emulator time.
//! * Consistency: a new relation is hidden for `consistency_delay`; a removed one vanishes at once.
//!   A departed member's relations stay (for `get_unassigned_list` and resigned transfers) but
//!   leave `get`, `list` and `batch/get_by_user`, which skips unknown or departed userids.
//! * Customer transfers: the on-job API answers 40131 (call level) for a handover who has left;
//!   per customer, 40131 when the handover does not follow the customer, 40129 (on-job) / 40100
//!   (resigned) while the customer waits in a transfer. A customer marked with
//!   [`EmulatorState::set_refuses_transfer`] refuses at once (status 3, `transfer_fail` with the
//!   taker as `UserID`). At takeover the taker gets `add_external_contact` unless they already
//!   followed the customer.
//! * Group chat transfers are immediate (status 3 after a resigned transfer); per chat, 40130 when
//!   the new owner is the owner and 40128 for a third on-job transfer within 90 days; a call over
//!   [`EmulatorLimits::groups_per_owner_per_day`] answers 45009 as a whole.
//! * `message/send`: contact tags (`totag`) are not emulated (all come back in `invalidtag`);
//!   unknown `msgtype` 40008, empty text 44004, no receiver at all 82001.
//! * `message/send` duplicate check (only with `enable_duplicate_check` equal to 1): a message is
//!   the same when the app, the receiver spec and the content are. The receiver spec is
//!   `touser`/`toparty`/`totag` compared as sets of ids (order and repeats do not matter; ids as
//!   given, invalid ones included); the content is `msgtype` and its body object (`text`,
//!   `textcard`, …) compared as JSON, so `safe`, `enable_id_trans` and the check's own fields do
//!   not matter. It is judged after every other check (a malformed duplicate still gets its
//!   errcode) and against the last *delivery* of that message, made with or without the check;
//!   a suppressed call neither delivers nor restarts the interval, and answers errcode 0 with the
//!   earlier delivery's `msgid`. The interval runs on the emulator clock (so
//!   [`EmulatorState::advance_clock`] ends it) and is `duplicate_check_interval` seconds: absent
//!   or ≤ 0 means the default 1800; above the documented 4 h maximum it is clamped to 14400 (WeCom
//!   documents a cap, not an error). A message exactly `interval` seconds later is delivered.
//! * Write log: a call counts as a write when it answers errcode 0, even if it changed nothing (a
//!   `mark_tag` of a tag already there, a suppressed or silently dropped `message/send`); a
//!   [`FaultKind::Latency`] or [`FaultKind::AnswerLost`] call is recorded once it runs, every other
//!   fault is not. Records are
//!   stamped with real time (`Instant` and Unix ms), not the emulator clock, as the latency they
//!   measure is real. Beyond [`MAX_WRITES`] records the oldest are dropped.
//! * Paging: a malformed cursor is 40058; `get_unassigned_list` refuses `page_size` > 1000 (40058)
//!   where `batch/get_by_user` clamps `limit` to 100 as documented.
//! * Userids compare exactly (WeCom: case-insensitively); repeated wrong secrets do not block the
//!   caller; an API path the emulator lacks answers HTTP 404.

pub mod admin;
mod api;
mod archive;
mod callbacks;
mod events;
mod faults;
mod handlers;
mod model;
mod seed;
mod state;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use archive::{ArchiveFault, ArchiveMedia};
pub use callbacks::{CallbackKind, CallbackTarget, DeliveryMode, DeliveryRecord};
pub use faults::{Fault, FaultKind};
pub use model::{
    DroppedMessage, MemberView, NewCustomer, NewStaff, RelationEdit, RelationView, TransferMode,
    TransferView, WriteRecord,
};
pub use seed::{SeedSpec, SeedSummary};
pub use state::{EmulatorState, MAX_WRITES, Stats};
pub use web::ClientContext;

/// How the emulator behaves. [`Default`] is WeCom's documented behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorConfig {
    /// `expires_in` of a new access token (WeCom: 7200 s). Tokens expire on the emulator clock.
    pub token_ttl: Duration,
    /// For this long (emulator clock) after a relation is added, `externalcontact/get` answers
    /// 84061 for it, and `externalcontact/list` and `batch/get_by_user` omit it (§2.4). Default 0.
    pub consistency_delay: Duration,
    /// Rate and business limits.
    pub limits: EmulatorLimits,
    /// How long a callback delivery waits for the receiver's answer (WeCom: 5 s).
    pub callback_timeout: Duration,
    /// Retries after a failed delivery (WeCom: 3, so up to 4 deliveries).
    pub callback_retries: u32,
    /// Pause between delivery attempts (WeCom's is unpublished; default 1 s).
    pub callback_retry_interval: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            token_ttl: Duration::from_secs(7200),
            consistency_delay: Duration::ZERO,
            limits: EmulatorLimits::default(),
            callback_timeout: Duration::from_secs(5),
            callback_retries: 3,
            callback_retry_interval: Duration::from_secs(1),
        }
    }
}

/// The limits of §4.7 and §4.8. Windows are fixed and aligned to the Unix epoch on real time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmulatorLimits {
    /// Calls per corp and API per minute (WeCom: 10,000); above → 45009.
    pub per_api_per_minute: u64,
    /// Calls per corp and API per hour (WeCom: 150,000); above → 45009.
    pub per_api_per_hour: u64,
    /// `message/send` deliveries per app and member per minute (WeCom: 30); above → dropped.
    pub message_per_user_per_minute: u64,
    /// `message/send` deliveries per app and member per hour (WeCom: 1000); above → dropped.
    pub message_per_user_per_hour: u64,
    /// Group chats one old owner may hand over per (emulator, UTC+8) day (WeCom: 300). A
    /// transfer call that would exceed it answers 45009 as a whole (an assumption: WeCom does
    /// not publish the errcode).
    pub groups_per_owner_per_day: u64,
    /// Requests of one API of one corp in flight at once; one more answers 45033 (older docs: 300).
    pub max_concurrent_per_api: usize,
}

impl Default for EmulatorLimits {
    fn default() -> Self {
        Self {
            per_api_per_minute: 10_000,
            per_api_per_hour: 150_000,
            message_per_user_per_minute: 30,
            message_per_user_per_hour: 1000,
            groups_per_owner_per_day: 300,
            max_concurrent_per_api: 300,
        }
    }
}

/// Starts emulators.
#[derive(Debug, Clone, Copy)]
pub struct Emulator;

impl Emulator {
    /// Starts an emulator on `127.0.0.1` and a free port.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<EmulatorHandle> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::serve(config, listener).await
    }

    /// Serves an emulator on `listener` (for `scrm emulator --listen ADDR`).
    pub async fn serve(
        config: EmulatorConfig,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<EmulatorHandle> {
        let addr = listener.local_addr()?;
        let state = EmulatorState::new(config)?;
        let router = api::router(Arc::clone(&state));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(error = %e, "emulator server stopped with an error");
            }
        });
        Ok(EmulatorHandle {
            addr,
            state,
            stop: Some(stop),
            server,
        })
    }
}

/// A running emulator. Dropping it shuts the server down.
#[derive(Debug)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    state: Arc<EmulatorState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT/cgi-bin/`: API paths (`gettoken`, `externalcontact/get`, …) are
    /// relative to it, as they are to `https://qyapi.weixin.qq.com/cgi-bin/`.
    pub fn base_url(&self) -> String {
        format!("http://{}/cgi-bin/", self.addr)
    }

    /// The address the emulator listens on (the admin API lives under `/testkit/`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The emulator's state: seed it, mutate it (with callbacks), inject faults, inspect it.
    pub fn state(&self) -> Arc<EmulatorState> {
        Arc::clone(&self.state)
    }

    /// Resolves once every queued callback delivery, retries included, has finished. Events held
    /// by [`DeliveryMode::reorder`] are released first (in reverse order).
    pub async fn flush_callbacks(&self) {
        self.state.flush_callbacks().await;
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.abort();
    }
}
