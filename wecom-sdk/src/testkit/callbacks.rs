//! WeCom's side of callbacks: which URL gets which events, and delivery as WeCom does it (signed
//! and encrypted POST, a deadline per attempt, retries on anything but HTTP 200), with knobs that
//! duplicate, reorder or drop events (§2.1: events arrive 1..4 times, out of order, or never).

use std::fmt;
use std::sync::Arc;

use crate::crypto::CallbackCrypto;
use crate::sender;

use super::state::EmulatorState;

/// Which callback configuration of a corp an event goes to (§2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CallbackKind {
    /// 客户联系: `change_external_contact`, `change_external_chat`, `change_external_tag`.
    Contacts,
    /// 通讯录: `change_contact`.
    Directory,
    /// 会话内容存档: `msgaudit_notify`.
    Archive,
    /// A self-built app's own messages and events (by agentid).
    App(i64),
}

impl CallbackKind {
    /// A short name: `contacts`, `directory`, `archive`, `app:1000002` (used by the admin API).
    pub fn label(&self) -> String {
        match self {
            Self::Contacts => "contacts".to_owned(),
            Self::Directory => "directory".to_owned(),
            Self::Archive => "archive".to_owned(),
            Self::App(agent_id) => format!("app:{agent_id}"),
        }
    }

    /// The inverse of [`CallbackKind::label`].
    pub fn parse(label: &str) -> Option<Self> {
        match label {
            "contacts" => Some(Self::Contacts),
            "directory" => Some(Self::Directory),
            "archive" => Some(Self::Archive),
            other => other
                .strip_prefix("app:")
                .and_then(|id| id.parse().ok())
                .map(Self::App),
        }
    }
}

/// Where a corp's callbacks of one kind go, and the keys to sign and encrypt them with (the
/// receiveid is the corp id).
#[derive(Clone, PartialEq, Eq)]
pub struct CallbackTarget {
    /// The full URL including the path, e.g. `http://127.0.0.1:8080/wecom/callback/ww…/contacts`.
    pub url: String,
    /// The Token of the callback configuration.
    pub token: String,
    /// The EncodingAESKey of the callback configuration (43 characters).
    pub encoding_aes_key: String,
}

impl fmt::Debug for CallbackTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackTarget")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .field("encoding_aes_key", &"[redacted]")
            .finish()
    }
}

/// Delivery knobs, applied to events as they are queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryMode {
    /// Deliver each event twice, concurrently (two [`DeliveryRecord`]s with the same plaintext).
    pub duplicate: bool,
    /// Hold events until [`EmulatorHandle::flush_callbacks`](super::EmulatorHandle::flush_callbacks)
    /// (or until this is switched off), then deliver them one after another in reverse order.
    pub reorder: bool,
    /// Drop the next N events entirely (recorded with `dropped: true`, never sent).
    pub drop_next: u32,
}

/// One delivery of one event (a duplicated event has two).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// The corp the event belongs to.
    pub corp_id: String,
    /// Which configuration it went to.
    pub kind: CallbackKind,
    /// The decrypted XML.
    pub plaintext: String,
    /// HTTP requests made so far (0 when dropped, held, or without a target).
    pub attempts: u32,
    /// Whether an attempt got HTTP 200.
    pub delivered: bool,
    /// The status of the last attempt; `None` before the first, or after a timeout or a refused
    /// connection.
    pub last_status: Option<u16>,
    /// Dropped by [`DeliveryMode::drop_next`].
    pub dropped: bool,
    /// Why the last attempt failed without a status, or why nothing was sent (no target, bad key).
    pub error: Option<String>,
}

/// An event on its way out of the state, before routing.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) corp_id: String,
    pub(crate) kind: CallbackKind,
    pub(crate) plaintext: String,
}

impl Outgoing {
    pub(crate) fn new(corp_id: &str, kind: CallbackKind, plaintext: String) -> Self {
        Self {
            corp_id: corp_id.to_owned(),
            kind,
            plaintext,
        }
    }
}

/// One routed delivery waiting to run.
pub(crate) struct Job {
    record: usize,
    url: String,
    crypto: CallbackCrypto,
    agent_id: Option<String>,
    plaintext: String,
}

/// Decrements the in-flight delivery count when a delivery task ends, however it ends.
struct PendingGuard(Arc<EmulatorState>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.pending.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl EmulatorState {
    /// Routes events to their targets and starts (or holds) their deliveries.
    pub(crate) fn enqueue(&self, events: Vec<Outgoing>) {
        if events.is_empty() {
            return;
        }
        let mut ready = Vec::new();
        {
            let mut inner = self.lock();
            for event in events {
                let corp = inner.corps.get(&event.corp_id);
                let target = corp.and_then(|c| c.targets.get(&event.kind)).cloned();
                let agent_id = match event.kind {
                    CallbackKind::App(id) => Some(id.to_string()),
                    CallbackKind::Archive => corp.map(|c| c.archive_agent_id.to_string()),
                    CallbackKind::Contacts | CallbackKind::Directory => None,
                };
                let mut record = DeliveryRecord {
                    corp_id: event.corp_id.clone(),
                    kind: event.kind,
                    plaintext: event.plaintext.clone(),
                    attempts: 0,
                    delivered: false,
                    last_status: None,
                    dropped: false,
                    error: None,
                };
                if inner.delivery_mode.drop_next > 0 {
                    inner.delivery_mode.drop_next -= 1;
                    record.dropped = true;
                    inner.deliveries.push(record);
                    continue;
                }
                let Some(target) = target else {
                    record.error = Some(format!("no {} callback target", event.kind.label()));
                    inner.deliveries.push(record);
                    continue;
                };
                let crypto = match CallbackCrypto::new(
                    &target.token,
                    &target.encoding_aes_key,
                    &event.corp_id,
                ) {
                    Ok(crypto) => crypto,
                    Err(e) => {
                        record.error = Some(format!("unusable callback target: {e}"));
                        inner.deliveries.push(record);
                        continue;
                    }
                };
                let copies = if inner.delivery_mode.duplicate { 2 } else { 1 };
                for _ in 0..copies {
                    let job = Job {
                        record: inner.deliveries.len(),
                        url: target.url.clone(),
                        crypto: crypto.clone(),
                        agent_id: agent_id.clone(),
                        plaintext: event.plaintext.clone(),
                    };
                    inner.deliveries.push(record.clone());
                    if inner.delivery_mode.reorder {
                        inner.held.push(job);
                    } else {
                        ready.push(job);
                    }
                }
            }
        }
        // Each event on its own task: concurrent, so arrival order is not guaranteed (as with WeCom).
        for job in ready {
            self.spawn_sequence(vec![job]);
        }
    }

    /// Releases held events: one task delivers them one after another, newest first.
    pub(crate) fn release_held(&self) {
        let mut held = std::mem::take(&mut self.lock().held);
        if held.is_empty() {
            return;
        }
        held.reverse();
        self.spawn_sequence(held);
    }

    /// Resolves once every queued delivery (retries included) has finished; held events
    /// ([`DeliveryMode::reorder`]) are released first. Same as
    /// [`EmulatorHandle::flush_callbacks`](super::EmulatorHandle::flush_callbacks).
    pub async fn flush_callbacks(&self) {
        self.release_held();
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    fn spawn_sequence(&self, jobs: Vec<Job>) {
        let Some(state) = self.me.upgrade() else {
            return;
        };
        state.pending.send_modify(|n| *n += 1);
        let guard = PendingGuard(Arc::clone(&state));
        self.runtime.spawn(async move {
            let _guard = guard;
            for job in jobs {
                deliver(&state, job).await;
            }
        });
    }

    fn update_record(&self, index: usize, update: impl FnOnce(&mut DeliveryRecord)) {
        if let Some(record) = self.lock().deliveries.get_mut(index) {
            update(record);
        }
    }
}

/// Delivers one event: up to `1 + callback_retries` signed POSTs, each with a fresh timestamp
/// (real time) and nonce, until one gets HTTP 200.
async fn deliver(state: &EmulatorState, job: Job) {
    let attempts = state.config.callback_retries.saturating_add(1);
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(state.config.callback_retry_interval).await;
        }
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let nonce = rand::random_range(100_000_000_u64..10_000_000_000).to_string();
        let request = sender::event(
            &job.crypto,
            &job.plaintext,
            &timestamp,
            &nonce,
            job.agent_id.as_deref(),
        );
        let separator = if job.url.contains('?') { '&' } else { '?' };
        let url = format!("{}{separator}{}", job.url, request.query);
        let result = state
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "text/xml")
            .body(request.body.unwrap_or_default())
            .timeout(state.config.callback_timeout)
            .send()
            .await;
        let (status, error) = match result {
            Ok(response) => (Some(response.status().as_u16()), None),
            Err(e) if e.is_timeout() => (None, Some("no answer before the deadline".to_owned())),
            Err(e) if e.is_connect() => (None, Some("connection failed".to_owned())),
            Err(_) => (None, Some("request failed".to_owned())),
        };
        let delivered = status == Some(200);
        state.update_record(job.record, |r| {
            r.attempts += 1;
            r.last_status = status;
            r.delivered = delivered;
            r.error = error;
        });
        if delivered {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_labels() {
        for kind in [
            CallbackKind::Contacts,
            CallbackKind::Directory,
            CallbackKind::Archive,
            CallbackKind::App(1_000_002),
        ] {
            assert_eq!(CallbackKind::parse(&kind.label()), Some(kind));
        }
        assert_eq!(CallbackKind::parse("app:x"), None);
    }

    #[test]
    fn targets_never_print_their_keys() {
        let t = CallbackTarget {
            url: "http://127.0.0.1/cb".into(),
            token: "tok123".into(),
            encoding_aes_key: "k".repeat(43),
        };
        let debug = format!("{t:?}");
        assert!(
            !debug.contains("tok123") && !debug.contains("kkkk"),
            "{debug}"
        );
    }
}
