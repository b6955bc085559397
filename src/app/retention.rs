//! The retention task (`[retention]`): deletes processed callbacks and expires downloaded archive
//! media once they are older than configured, in small batches so neither backend holds a long
//! lock. Every instance may run it: each batch is one statement, and a row deleted or expired
//! twice is the same outcome.

use std::time::Duration;

use tokio::sync::watch;

use crate::platform::config::RetentionSettings;
use crate::platform::db::{Db, StoreError};

/// Inbox rows deleted per statement.
const INBOX_BATCH: i64 = 1_000;
/// Media rows expired per round.
const MEDIA_BATCH: i64 = 200;

/// What one run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Processed inbox rows deleted.
    pub inbox: u64,
    /// Media rows expired (their files deleted unless shared).
    pub media: u64,
}

/// One run at `now_ms`: everything past its retention, batch by batch.
pub async fn run_once(
    db: &Db,
    settings: &RetentionSettings,
    now_ms: i64,
) -> Result<Pruned, StoreError> {
    let mut pruned = Pruned::default();
    if let Some(before) = RetentionSettings::cutoff_ms(settings.inbox_days, now_ms) {
        loop {
            let n = crate::pipeline::inbox::prune_done(db, before, INBOX_BATCH).await?;
            pruned.inbox += n;
            if n < INBOX_BATCH as u64 {
                break;
            }
        }
    }
    if let Some(before) = RetentionSettings::cutoff_ms(settings.media_days, now_ms) {
        loop {
            let n = crate::domain::archive::store::expire_media(db, before, MEDIA_BATCH).await?;
            pruned.media += n;
            if n < MEDIA_BATCH as u64 {
                break;
            }
        }
    }
    metrics::counter!("scrm_retention_deleted_total", "what" => "inbox").increment(pruned.inbox);
    metrics::counter!("scrm_retention_deleted_total", "what" => "media").increment(pruned.media);
    Ok(pruned)
}

/// Runs [`run_once`] every `check_interval_secs` until `stop`.
pub async fn run(db: Db, settings: RetentionSettings, mut stop: watch::Receiver<bool>) {
    if settings.inbox_days == 0 && settings.media_days == 0 {
        return;
    }
    let mut tick = crate::platform::ticker::interval(Duration::from_secs(
        settings.check_interval_secs.max(60),
    ));
    while crate::platform::ticker::next_tick(&mut tick, &mut stop).await {
        match run_once(&db, &settings, crate::platform::db::now_ms()).await {
            Ok(Pruned { inbox: 0, media: 0 }) => {}
            Ok(p) => tracing::info!(
                inbox = p.inbox,
                media = p.media,
                "retention: old rows removed"
            ),
            Err(e) => tracing::warn!(error = %e, "retention: cannot remove old rows"),
        }
    }
}
