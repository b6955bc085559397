//! Media downloads (`GetMediaData`, §5.5): chunk by chunk into `{media_dir}/{corp}/.part/{id}`,
//! with the index and byte count checkpointed after each chunk (so a restart resumes where it
//! was), then checked against the message's `md5sum` and size and moved to
//! `{media_dir}/{corp}/{md5[0..2]}/{md5}` — one file per content, however many messages share it.
//! Files over `media_max_bytes` are recorded as `too_large`, not fetched.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::Digest as _;

use super::supervisor::{CallError, Supervisor};
use crate::domain::archive::proto::{Reply, Request};
use crate::domain::archive::store::{self, PendingMedia as Pending};
use crate::platform::config::ArchiveSettings;
use crate::platform::db::{Db, StoreError, now_ms};

/// Failed attempts of one file before it is given up (state `failed`).
const MAX_ATTEMPTS: i32 = 5;

/// Why downloading stopped.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The worker failed (it is replaced; the file resumes later).
    #[error(transparent)]
    Worker(#[from] CallError),
    /// The media folder is not writable.
    #[error("media folder: {0}")]
    Io(#[from] std::io::Error),
}

impl From<sqlx::Error> for MediaError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// Downloads pending media of a corp for at most `budget`; returns how many files finished.
pub async fn download_pending(
    db: &Db,
    corp_id: &str,
    sup: &mut Supervisor,
    dir: &Path,
    settings: &ArchiveSettings,
    budget: Duration,
) -> Result<u64, MediaError> {
    let started = Instant::now();
    let mut done = 0;
    while started.elapsed() < budget {
        let next = store::next_pending_media(db, corp_id).await?;
        let Some(p) = next else { break };
        if download_one(db, corp_id, sup, dir, settings, &p).await? {
            done += 1;
        }
    }
    Ok(done)
}

fn final_path(dir: &Path, corp_id: &str, md5: &str) -> PathBuf {
    dir.join(corp_id).join(&md5[..2.min(md5.len())]).join(md5)
}

/// Chunks in a row that bring no data and no new index before a file is retried later: a library
/// that keeps answering `finished = false` must not hold the corp's pulling forever.
const MAX_STALLS: u32 = 3;

/// Runs blocking file work (writes, fsync, hashing a resumed prefix) off the async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| std::io::Error::other(format!("file task: {e}")))?
}

/// Records a failed attempt (the file is tried again later, `failed` after [`MAX_ATTEMPTS`]);
/// `true` when that was the last one.
async fn retry_later(db: &Db, p: &Pending, error: &str) -> Result<bool, StoreError> {
    store::media_failed_attempt(db, p.id, error, MAX_ATTEMPTS, now_ms()).await?;
    Ok(p.attempts + 1 >= MAX_ATTEMPTS)
}

/// One file; `true` when it finished (done, too large or failed for good).
async fn download_one(
    db: &Db,
    corp_id: &str,
    sup: &mut Supervisor,
    dir: &Path,
    settings: &ArchiveSettings,
    p: &Pending,
) -> Result<bool, MediaError> {
    // The same content already downloaded for another message.
    if let Some(md5) = p.md5sum.as_deref().filter(|m| is_md5(m)) {
        let same = store::downloaded_path(db, corp_id, md5).await?;
        if let Some(path) = same.filter(|p| Path::new(p).exists()) {
            store::set_media_state(db, p.id, "done", None, Some(&path)).await?;
            return Ok(true);
        }
    }
    let part_dir = dir.join(corp_id).join(".part");
    let part = part_dir.join(p.id.to_string());
    let resumed = u64::try_from(p.bytes_done).unwrap_or(0);
    // Open, cut what was written past the last checkpoint, and hash what stays (the md5 is kept
    // up to date chunk by chunk from here: the file is never read whole).
    let (mut file, mut hasher) = {
        let part = part.clone();
        blocking(move || {
            crate::platform::db::create_private_dir(&part_dir)?;
            let mut file = crate::platform::db::private_file()
                .read(true)
                .write(true)
                .truncate(false)
                .open(&part)?;
            file.set_len(resumed)?;
            let mut hasher = md5::Md5::new();
            use std::io::{Read as _, Seek as _};
            file.seek(std::io::SeekFrom::Start(0))?;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(buf.get(..n).unwrap_or_default());
            }
            file.seek(std::io::SeekFrom::End(0))?;
            Ok((file, hasher))
        })
        .await?
    };
    let mut index = p.next_index.clone();
    let mut bytes = p.bytes_done;
    let max = i64::try_from(settings.media_max_bytes).unwrap_or(i64::MAX);
    // However slow the library, one file may not hold the corp's puller longer than this.
    let deadline = Instant::now()
        + Duration::from_secs(
            u64::from(settings.call_timeout_secs)
                .saturating_mul(20)
                .max(600),
        );
    let mut stalls = 0;
    loop {
        if Instant::now() > deadline {
            let last = retry_later(db, p, "download took too long; resumes later").await?;
            return Ok(last);
        }
        let request = Request::Media {
            sdkfileid: p.sdkfileid.clone(),
            index: index.clone(),
            timeout_secs: i32::try_from(settings.call_timeout_secs).unwrap_or(30),
        };
        let reply = match sup.call(&request).await {
            Ok(r) => r,
            Err(CallError::Library { ret, message }) => {
                // 10005: bad file id; 301048: gone from WeCom — retrying cannot help.
                let permanent = ret == 10005 || message.contains("301048");
                let error = format!("GetMediaData ret {ret}: {message}");
                if permanent {
                    store::set_media_state(db, p.id, "failed", Some(&error), None).await?;
                    return Ok(true);
                }
                return Ok(retry_later(db, p, &error).await?);
            }
            Err(e) => return Err(e.into()),
        };
        let Reply::Media {
            data_b64,
            next_index,
            finished,
        } = reply
        else {
            return Ok(false);
        };
        use base64::Engine as _;
        let Ok(data) = base64::engine::general_purpose::STANDARD.decode(data_b64.as_bytes()) else {
            return Ok(retry_later(db, p, "GetMediaData: a chunk that is not base64").await?);
        };
        if data.is_empty() && !finished {
            stalls += 1;
            if stalls >= MAX_STALLS || next_index == index {
                return Ok(retry_later(
                    db,
                    p,
                    "GetMediaData made no progress (no data, finished = false)",
                )
                .await?);
            }
        } else {
            stalls = 0;
        }
        bytes += i64::try_from(data.len()).unwrap_or(i64::MAX);
        if bytes > max {
            drop(file);
            let _ = std::fs::remove_file(&part);
            store::set_media_state(db, p.id, "too_large", Some("over media_max_bytes"), None)
                .await?;
            return Ok(true);
        }
        (file, hasher) = blocking(move || {
            hasher.update(&data);
            file.write_all(&data)?;
            file.sync_data()?;
            Ok((file, hasher))
        })
        .await?;
        store::media_checkpoint(db, p.id, &next_index, bytes, now_ms()).await?;
        index = next_index;
        if finished {
            break;
        }
    }
    drop(file);
    let md5 = hex::encode(hasher.finalize());
    let written = bytes;
    if let Some(expected) = p.md5sum.as_deref().filter(|m| is_md5(m))
        && !expected.eq_ignore_ascii_case(&md5)
    {
        let _ = std::fs::remove_file(&part);
        store::set_media_state(
            db,
            p.id,
            "failed",
            Some(&format!("md5 {md5} differs from the message's {expected}")),
            None,
        )
        .await?;
        return Ok(true);
    }
    if let Some(size) = p.size
        && size != written
    {
        let _ = std::fs::remove_file(&part);
        store::set_media_state(
            db,
            p.id,
            "failed",
            Some(&format!("{written} bytes, the message says {size}")),
            None,
        )
        .await?;
        return Ok(true);
    }
    let target = final_path(dir, corp_id, &md5);
    let moved = {
        let (part, target) = (part.clone(), target.clone());
        blocking(move || {
            if let Some(parent) = target.parent() {
                crate::platform::db::create_private_dir(parent)?;
            }
            if target.exists() {
                std::fs::remove_file(&part)
            } else {
                std::fs::rename(&part, &target)
            }
        })
    };
    moved.await?;
    store::set_media_state(db, p.id, "done", None, Some(&target.display().to_string())).await?;
    metrics::counter!("scrm_archive_media_total", "corp_id" => corp_id.to_owned()).increment(1);
    Ok(true)
}

fn is_md5(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
