//! The framed protocol between the server and `scrm archive-worker` over the child's stdin and
//! stdout: each frame is a 4-byte big-endian length and that many bytes of JSON. One request, one
//! reply, in order. Frames are bounded ([`MAX_FRAME`]) so a confused peer cannot make the other
//! allocate without limit; anything else on stdout would corrupt the stream, so the worker logs to
//! stderr only.

use serde::{Deserialize, Serialize};

/// The largest frame either side accepts: a batch of 1,000 messages is a few MB (WeCom refuses
/// larger answers with 301058), a media chunk 512 KiB before base64. Buffers grow as bytes arrive,
/// so a bogus length costs nothing until the bytes are there.
pub const MAX_FRAME: usize = 32 * 1024 * 1024;

/// What the server asks. Its `Debug` names the operation only: `Hello` carries the secret and
/// the private keys.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First frame: load the library, `NewSdk` + `Init`, build the key ring.
    Hello {
        /// Path of the library.
        library: String,
        /// The corp.
        corp_id: String,
        /// Its 会话内容存档 secret.
        secret: String,
        /// PEM private keys by `publickey_ver`.
        keys: Vec<(u32, String)>,
        /// Proxy for the library, `""` for none.
        proxy: String,
        /// Proxy credentials, `""` for none.
        proxy_password: String,
    },
    /// `GetChatData(seq, limit)`, then the RSA step and `DecryptData` for each record.
    Pull {
        /// The largest seq already held (records after it come back).
        seq: u64,
        /// At most this many records (≤ 1000).
        limit: u32,
        /// The library's timeout, seconds.
        timeout_secs: i32,
    },
    /// Decrypt records recorded as undecryptable, with the keys of this worker's ring.
    Redecrypt {
        /// The records as WeCom sent them.
        records: Vec<wecom_sdk::archive::EncryptedRecord>,
    },
    /// One `GetMediaData` chunk.
    Media {
        /// The file.
        sdkfileid: String,
        /// `""` for the first chunk, then the previous chunk's `next_index`.
        index: String,
        /// The library's timeout, seconds.
        timeout_secs: i32,
    },
    /// Resident memory of the worker, for the supervisor's limit.
    Ping,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hello { corp_id, keys, .. } => f
                .debug_struct("Hello")
                .field("corp_id", corp_id)
                .field(
                    "key_versions",
                    &keys.iter().map(|(v, _)| v).collect::<Vec<_>>(),
                )
                .finish_non_exhaustive(),
            Self::Pull { seq, limit, .. } => f
                .debug_struct("Pull")
                .field("seq", seq)
                .field("limit", limit)
                .finish_non_exhaustive(),
            Self::Redecrypt { records } => f
                .debug_struct("Redecrypt")
                .field("records", &records.len())
                .finish(),
            Self::Media {
                sdkfileid, index, ..
            } => f
                .debug_struct("Media")
                .field("sdkfileid", sdkfileid)
                .field("index", index)
                .finish_non_exhaustive(),
            Self::Ping => f.write_str("Ping"),
        }
    }
}

/// What the worker answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    /// Ready; the key versions loaded.
    Ready {
        /// `publickey_ver`s in the ring.
        versions: Vec<u32>,
    },
    /// A pulled (or re-decrypted) batch.
    Batch {
        /// WeCom's errcode inside the JSON (0 = fine).
        errcode: i64,
        /// WeCom's errmsg.
        errmsg: String,
        /// Every record, seq ascending, decrypted or with the reason it is not.
        items: Vec<Item>,
    },
    /// One media chunk.
    Media {
        /// base64 of the chunk.
        data_b64: String,
        /// The index for the next call.
        next_index: String,
        /// The last chunk.
        finished: bool,
    },
    /// Answer to [`Request::Ping`].
    Pong {
        /// Resident memory, KiB.
        rss_kib: u64,
    },
    /// The library (or loading it) failed.
    Failed {
        /// The library's return code, 0 when the failure is not one (a load error).
        ret: i32,
        /// What went wrong.
        message: String,
    },
}

impl Reply {
    /// The reply's kind, for logs (its content may be chat or media).
    pub fn variant(&self) -> &'static str {
        match self {
            Self::Ready { .. } => "ready",
            Self::Batch { .. } => "batch",
            Self::Media { .. } => "media",
            Self::Pong { .. } => "pong",
            Self::Failed { .. } => "failed",
        }
    }
}

/// One record of a batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Item {
    /// The record as WeCom sent it (kept for undecryptable ones).
    pub record: wecom_sdk::archive::EncryptedRecord,
    /// The decrypted message JSON, or why there is none.
    pub outcome: Outcome,
}

/// A record's fate in the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The decrypted message JSON (UTF-8).
    Plain {
        /// The JSON text.
        json: String,
    },
    /// Not decryptable now: `reason` is `unknown_key_version`, `bad_key`, `corrupt_key`,
    /// `corrupt_payload` or `not_utf8`.
    Undecryptable {
        /// Stable code.
        reason: String,
        /// Human detail.
        detail: String,
    },
}

/// Errors reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pipe closed (the peer exited).
    #[error("the pipe closed")]
    Closed,
    /// I/O failed.
    #[error("pipe i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame over [`MAX_FRAME`].
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    /// Not the JSON expected.
    #[error("bad frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes one frame.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(value)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads one frame (blocking; the worker's side).
pub fn read_blocking<T: for<'de> Deserialize<'de>>(
    r: &mut impl std::io::Read,
) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = std::io::Read::read_to_end(&mut std::io::Read::take(r, len as u64), &mut body)?;
    if read < len {
        return Err(FrameError::Closed);
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Reads one frame (async; the server's side).
pub async fn read_async<T: for<'de> Deserialize<'de>>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<T, FrameError> {
    use tokio::io::AsyncReadExt as _;
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if read < len {
        return Err(FrameError::Closed);
    }
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "a test fails loudly"
    )]
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_errors() {
        let frame = encode(&Request::Pull {
            seq: 7,
            limit: 1000,
            timeout_secs: 5,
        })
        .unwrap();
        let back: Request = read_blocking(&mut frame.as_slice()).unwrap();
        assert!(matches!(
            back,
            Request::Pull {
                seq: 7,
                limit: 1000,
                ..
            }
        ));
        // Cut anywhere: closed, never a panic.
        for cut in 0..frame.len() {
            let r: Result<Request, _> = read_blocking(&mut &frame[..cut]);
            assert!(matches!(r, Err(FrameError::Closed)), "cut {cut}");
        }
        let hello = Request::Hello {
            library: "/x.so".into(),
            corp_id: "ww1".into(),
            secret: "top-secret".into(),
            keys: vec![(1, "-----BEGIN PRIVATE KEY-----".into())],
            proxy: String::new(),
            proxy_password: "p4ss".into(),
        };
        let shown = format!("{hello:?}");
        assert!(
            !shown.contains("top-secret") && !shown.contains("BEGIN") && !shown.contains("p4ss")
        );
        let huge = [0xff, 0xff, 0xff, 0xff];
        let r: Result<Request, _> = read_blocking(&mut huge.as_slice());
        assert!(matches!(r, Err(FrameError::TooLarge(_))));
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend_from_slice(b"{x}");
        let r: Result<Request, _> = read_blocking(&mut junk.as_slice());
        assert!(matches!(r, Err(FrameError::Json(_))));
    }
}
