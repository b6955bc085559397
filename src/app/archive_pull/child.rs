//! `scrm archive-worker`: the child process that holds WeCom's library. It reads
//! [`Request`]s from stdin and writes [`Reply`]s to stdout (see [`super::proto`]); logs go to
//! stderr. If the library crashes, hangs or leaks, only this process is lost: the server's
//! supervisor sees it and starts another.
//!
//! Per record it does the RSA step itself (the key ring, in parallel over the cores) and then the
//! library's local `DecryptData`. Library calls run on one thread with a large stack (the library
//! is known to need it, §7.10).

use std::io::{Read, Write};

use wecom_sdk::archive::EncryptedRecord;
use wecom_sdk::archive::ffi::{FinanceLibrary, Sdk};
use wecom_sdk::archive::keys::KeyRing;

use crate::domain::archive::proto::{self, FrameError, Item, Outcome, Reply, Request};

/// Stack of the thread that calls the library.
const LIBRARY_STACK: usize = 16 * 1024 * 1024;

/// Runs the worker on stdin/stdout until the server closes the pipe. Returns the exit code.
pub fn run() -> i32 {
    let worker = std::thread::Builder::new()
        .name("archive-library".into())
        .stack_size(LIBRARY_STACK)
        .spawn(|| {
            // The protocol gets a descriptor of its own; what the vendor library prints goes to
            // stderr (the log), not into the frames.
            let mut output = match wecom_sdk::archive::ffi::take_stdout_for_protocol() {
                Ok(file) => std::io::BufWriter::new(file),
                Err(e) => {
                    eprintln!("archive worker: cannot set up the protocol channel: {e}");
                    return 71;
                }
            };
            let mut input = std::io::stdin().lock();
            serve(&mut input, &mut output)
        });
    match worker.map(|w| w.join()) {
        Ok(Ok(code)) => code,
        _ => 70,
    }
}

struct Session {
    library: FinanceLibrary,
    sdk: Sdk,
    ring: KeyRing,
    proxy: String,
    proxy_password: String,
}

fn serve(input: &mut impl Read, output: &mut impl Write) -> i32 {
    let mut session = match proto::read_blocking::<Request>(input) {
        Ok(Request::Hello {
            library,
            corp_id,
            secret,
            keys,
            proxy,
            proxy_password,
        }) => match open(&library, &corp_id, &secret, &keys) {
            Ok((library, sdk, ring)) => Session {
                library,
                sdk,
                ring,
                proxy,
                proxy_password,
            },
            Err(failed) => {
                let _ = send(output, &failed);
                return 3;
            }
        },
        Ok(_) => {
            let _ = send(output, &failed(0, "the first request must be hello"));
            return 2;
        }
        Err(FrameError::Closed) => return 0,
        Err(e) => {
            eprintln!("archive-worker: {e}");
            return 2;
        }
    };
    if send(
        output,
        &Reply::Ready {
            versions: session.ring.versions(),
        },
    )
    .is_err()
    {
        return 0;
    }
    loop {
        let request = match proto::read_blocking::<Request>(input) {
            Ok(r) => r,
            Err(FrameError::Closed) => return 0,
            Err(e) => {
                eprintln!("archive-worker: {e}");
                return 2;
            }
        };
        let reply = session.handle(request);
        if send(output, &reply).is_err() {
            return 0;
        }
    }
}

fn open(
    path: &str,
    corp_id: &str,
    secret: &str,
    keys: &[(u32, String)],
) -> Result<(FinanceLibrary, Sdk, KeyRing), Reply> {
    let mut ring = KeyRing::new();
    for (version, pem) in keys {
        ring.insert_pem(*version, pem)
            .map_err(|e| failed(0, &e.to_string()))?;
    }
    let library =
        FinanceLibrary::open(std::path::Path::new(path)).map_err(|e| failed(0, &e.to_string()))?;
    let mut sdk = library
        .new_sdk()
        .map_err(|e| failed(e.ret, &format!("NewSdk: {e}")))?;
    sdk.init(corp_id, secret)
        .map_err(|e| failed(e.ret, &format!("Init: {e}")))?;
    Ok((library, sdk, ring))
}

fn failed(ret: i32, message: &str) -> Reply {
    Reply::Failed {
        ret,
        message: message.to_owned(),
    }
}

fn send(output: &mut impl Write, reply: &Reply) -> Result<(), FrameError> {
    let frame = proto::encode(reply)?;
    output.write_all(&frame)?;
    output.flush()?;
    Ok(())
}

impl Session {
    fn handle(&mut self, request: Request) -> Reply {
        match request {
            Request::Hello { .. } => failed(0, "already initialised"),
            Request::Ping => Reply::Pong {
                rss_kib: rss_kib(std::process::id()).unwrap_or(0),
            },
            Request::Pull {
                seq,
                limit,
                timeout_secs,
            } => {
                let raw = match self.sdk.get_chat_data(
                    seq,
                    limit,
                    &self.proxy,
                    &self.proxy_password,
                    timeout_secs,
                ) {
                    Ok(raw) => raw,
                    Err(e) => return failed(e.ret, &format!("GetChatData: {e}")),
                };
                let batch = match wecom_sdk::archive::ChatDataBatch::parse(&raw) {
                    Ok(b) => b,
                    Err(e) => {
                        return failed(10002, &format!("GetChatData answered no batch: {e}"));
                    }
                };
                if batch.errcode != 0 {
                    return Reply::Batch {
                        errcode: batch.errcode,
                        errmsg: batch.errmsg,
                        items: Vec::new(),
                    };
                }
                Reply::Batch {
                    errcode: 0,
                    errmsg: batch.errmsg,
                    items: decrypt_all(&self.library, &self.ring, batch.chatdata),
                }
            }
            Request::Redecrypt { records } => Reply::Batch {
                errcode: 0,
                errmsg: String::new(),
                items: decrypt_all(&self.library, &self.ring, records),
            },
            Request::Media {
                sdkfileid,
                index,
                timeout_secs,
            } => match self.sdk.get_media_data(
                &index,
                &sdkfileid,
                &self.proxy,
                &self.proxy_password,
                timeout_secs,
            ) {
                Ok(chunk) => {
                    use base64::Engine as _;
                    Reply::Media {
                        data_b64: base64::engine::general_purpose::STANDARD.encode(&chunk.data),
                        next_index: chunk.next_index,
                        finished: chunk.finished,
                    }
                }
                Err(e) => failed(e.ret, &format!("GetMediaData: {e}")),
            },
        }
    }
}

/// The RSA step for every record (spread over the cores: it is the expensive part), then the
/// library's `DecryptData` one by one. Seq ascending.
fn decrypt_all(
    library: &FinanceLibrary,
    ring: &KeyRing,
    mut records: Vec<EncryptedRecord>,
) -> Vec<Item> {
    records.sort_by_key(|r| r.seq);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let per = records.len().div_ceil(threads).max(16);
    let keys: Vec<Result<String, wecom_sdk::archive::keys::KeyError>> = std::thread::scope(|s| {
        let parts: Vec<_> = records
            .chunks(per)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|r| ring.unwrap_key(r.publickey_ver, &r.encrypt_random_key))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_default())
            .collect()
    });
    records
        .into_iter()
        .zip(keys)
        .map(|(record, key)| {
            let outcome = match key {
                Err(e) => Outcome::Undecryptable {
                    reason: e.code().to_owned(),
                    detail: e.to_string(),
                },
                Ok(key) => match library.decrypt_data(&key, &record.encrypt_chat_msg) {
                    Err(e) => Outcome::Undecryptable {
                        reason: "corrupt_payload".to_owned(),
                        detail: format!("DecryptData: {e}"),
                    },
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(json) => Outcome::Plain { json },
                        Err(_) => Outcome::Undecryptable {
                            reason: "not_utf8".to_owned(),
                            detail: "DecryptData returned bytes that are not UTF-8".to_owned(),
                        },
                    },
                },
            };
            Item { record, outcome }
        })
        .collect()
}

/// Resident memory of process `pid`, KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
