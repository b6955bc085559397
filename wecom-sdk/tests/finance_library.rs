//! The library loader (`archive::ffi`) against the stand-in library
//! (`wecom-sdk/finance-standin`), which the WeCom emulator serves: GetChatData paging and seq
//! semantics, the RSA step with the key ring, DecryptData, media chunks with NUL bytes, the
//! library's failure modes the emulator scripts, and loading errors.
//!
//! Build the stand-in first: `cargo build -p wework-finance-standin && cargo test -p wecom-sdk
//! --features testkit --test finance_library`.
//!
//! One emulator serves every test (the stand-in reads its URL from the environment, which is
//! process-wide); each test uses its own corp, and the tests run one at a time so that the RSS
//! measurement of the leak test sees only its own leak. Crash and Hang cannot be survived in
//! this process: they run in a child process (this test binary again, running one ignored
//! test), which must die of SIGSEGV or still be blocked after its call's timeout; how the
//! server supervises such a child is covered by the server's own tests.
#![cfg(feature = "testkit")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly"
)]
#![allow(
    unsafe_code,
    reason = "std::env::set_var: the stand-in reads its URL from the environment"
)]

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use md5::{Digest as _, Md5};
use wecom_sdk::archive::ffi::{FinanceLibrary, LoadError, MediaChunk, Sdk, SdkError};
use wecom_sdk::archive::keys::{KeyError, KeyRing};
use wecom_sdk::archive::standin::STANDIN_URL_ENV;
use wecom_sdk::archive::{ChatDataBatch, EncryptedRecord};
use wecom_sdk::testkit::{ArchiveFault, Emulator, EmulatorConfig, EmulatorHandle, EmulatorState};

const SECRET: &str = "archive-secret-0123456789";
const TIMEOUT: i32 = 10;

struct Env {
    runtime: tokio::runtime::Runtime,
    emulator: EmulatorHandle,
    library: FinanceLibrary,
}

fn standin_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .join("../libwework_finance_standin.so");
    assert!(
        path.exists(),
        "the stand-in library is missing at {}: build it with `cargo build -p wework-finance-standin`",
        path.display()
    );
    path
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = standin_path();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = runtime
            .block_on(Emulator::start(EmulatorConfig::default()))
            .unwrap();
        // SAFETY: set once, under the OnceLock, before any library call reads it; the tests
        // run one at a time (`serial`), so no other test thread reads the environment now.
        unsafe { std::env::set_var(STANDIN_URL_ENV, format!("http://{}", emulator.addr())) };
        let library = FinanceLibrary::open(&path).unwrap();
        Env {
            runtime,
            emulator,
            library,
        }
    })
}

/// One test at a time (see the module docs).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn state() -> Arc<EmulatorState> {
    env().emulator.state()
}

/// Runs library calls on the runtime's blocking pool, as the server does.
fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let runtime = &env().runtime;
    match runtime.block_on(runtime.spawn_blocking(f)) {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("{e}"),
    }
}

fn key(name: &str) -> String {
    let path = format!(
        "{}/../fixtures/archive/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).expect(&path)
}

/// A corp with the archive secret and public key v1; the ring holds private key v1.
fn corp(name: &str) -> (String, KeyRing) {
    let corp_id = format!("wwfinance{name}");
    let state = state();
    state.set_archive_secret(&corp_id, SECRET);
    state
        .add_archive_public_key(&corp_id, 1, &key("v1.pub.pem"))
        .unwrap();
    let mut ring = KeyRing::new();
    ring.insert_pem(1, &key("v1.pem")).unwrap();
    (corp_id, ring)
}

fn sdk(corp_id: &str, secret: &str) -> Sdk {
    let mut sdk = env().library.new_sdk().unwrap();
    sdk.init(corp_id, secret).unwrap();
    sdk
}

fn fetch(sdk: &mut Sdk, seq: u64, limit: u32) -> Result<ChatDataBatch, SdkError> {
    let bytes = sdk.get_chat_data(seq, limit, "", "", TIMEOUT)?;
    Ok(ChatDataBatch::parse(&bytes).unwrap())
}

/// The RSA step, then DecryptData.
fn open(ring: &KeyRing, record: &EncryptedRecord) -> Vec<u8> {
    let key = ring
        .unwrap_key(record.publickey_ver, &record.encrypt_random_key)
        .unwrap();
    env()
        .library
        .decrypt_data(&key, &record.encrypt_chat_msg)
        .unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn pulls_pushed_texts_and_decrypts_them() {
    let _serial = serial();
    let (corp_id, ring) = corp("texts");
    let state = state();
    let (s1, id1) = state.archive_text(&corp_id, "zhangsan", &["wmCustomerA"], "", "您好");
    let (s2, id2) = state.archive_text(&corp_id, "wmCustomerA", &["zhangsan"], "", "价格多少");
    // Verbatim JSON with a raw newline inside a string, as WeCom's can have.
    let raw = "{\"msgid\":\"raw-1\",\"action\":\"send\",\"from\":\"zhangsan\",\"tolist\":[\"lisi\"],\"roomid\":\"wrRoom\",\"msgtime\":1,\"msgtype\":\"text\",\"text\":{\"content\":\"第一行\n第二行\"}}";
    let now_ms = state.now_ms();
    let raw = raw.replace("\"msgtime\":1,", &format!("\"msgtime\":{now_ms},"));
    let s3 = state.archive_push(&corp_id, &raw, None);
    assert_eq!((s1, s2, s3), (1, 2, 3));
    assert!(id1.ends_with("_external"), "{id1}");
    assert_eq!(state.archive_newest_seq(&corp_id), 3);

    let c = corp_id;
    let (all, after_one) = blocking(move || {
        let mut sdk = sdk(&c, SECRET);
        (
            fetch(&mut sdk, 0, 100).unwrap(),
            fetch(&mut sdk, 1, 100).unwrap(),
        )
    });
    assert_eq!(all.errcode, 0);
    let seqs: Vec<u64> = all.chatdata.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let ids: Vec<&str> = all.chatdata.iter().map(|r| r.msgid.as_str()).collect();
    assert_eq!(ids, vec![id1.as_str(), id2.as_str(), "raw-1"]);
    assert!(all.chatdata.iter().all(|r| r.publickey_ver == 1));

    let first = json(&open(&ring, &all.chatdata[0]));
    assert_eq!(first["msgid"], id1.as_str());
    assert_eq!(first["from"], "zhangsan");
    assert_eq!(first["tolist"][0], "wmCustomerA");
    assert_eq!(first["msgtype"], "text");
    assert_eq!(first["text"]["content"], "您好");
    let second = json(&open(&ring, &all.chatdata[1]));
    assert_eq!(second["text"]["content"], "价格多少");
    assert_eq!(
        open(&ring, &all.chatdata[2]),
        raw.as_bytes(),
        "verbatim, control bytes kept"
    );

    // Strictly greater than the seq passed.
    let seqs: Vec<u64> = after_one.chatdata.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![2, 3]);
}

#[test]
fn limit_over_1000_is_a_parameter_error() {
    let _serial = serial();
    let (corp_id, _ring) = corp("limit");
    let calls = state().archive_calls(&corp_id);
    let c = corp_id.clone();
    let result = blocking(move || sdk(&c, SECRET).get_chat_data(0, 1001, "", "", TIMEOUT));
    assert_eq!(result, Err(SdkError { ret: 10000 }));
    assert_eq!(
        state().archive_calls(&corp_id),
        calls,
        "refused before any request"
    );
}

#[test]
fn pages_2500_messages_in_three_calls_missing_none() {
    let _serial = serial();
    let (corp_id, ring) = corp("paging");
    let state = state();
    state.archive_synthetic(&corp_id, 2500);
    assert_eq!(state.archive_newest_seq(&corp_id), 2500);
    let calls = state.archive_calls(&corp_id);
    let c = corp_id.clone();
    let batches = blocking(move || {
        let mut sdk = sdk(&c, SECRET);
        let mut batches = Vec::new();
        let mut max_seq = 0;
        loop {
            let batch = fetch(&mut sdk, max_seq, 1000).unwrap();
            let n = batch.chatdata.len();
            max_seq = batch
                .chatdata
                .iter()
                .map(|r| r.seq)
                .max()
                .unwrap_or(max_seq);
            batches.push(batch);
            if n < 1000 {
                break;
            }
        }
        batches
    });
    let sizes: Vec<usize> = batches.iter().map(|b| b.chatdata.len()).collect();
    assert_eq!(sizes, vec![1000, 1000, 500]);
    assert_eq!(state.archive_calls(&corp_id) - calls, 3);
    let records: Vec<&EncryptedRecord> = batches.iter().flat_map(|b| &b.chatdata).collect();
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=2500).collect::<Vec<u64>>());
    let ids: std::collections::HashSet<&str> = records.iter().map(|r| r.msgid.as_str()).collect();
    assert_eq!(ids.len(), 2500, "msgids are unique");
    let mut risky = 0;
    for record in records.iter().step_by(25) {
        let message = json(&open(&ring, record));
        assert_eq!(message["msgid"], record.msgid.as_str());
        assert_eq!(message["msgtype"], "text");
        let content = message["text"]["content"].as_str().unwrap();
        if content.contains("私下转账给我") {
            risky += 1;
        }
    }
    // 100 sampled, about 3 % ask for a private transfer; deterministic, so exact bounds hold.
    assert!(risky <= 20, "{risky}");
}

#[test]
fn a_transient_return_code_fails_once() {
    let _serial = serial();
    let (corp_id, _ring) = corp("ret");
    let state = state();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "hi");
    state.archive_fault(&corp_id, ArchiveFault::Ret(10001), 1);
    let c = corp_id;
    let (first, second) = blocking(move || {
        let mut sdk = sdk(&c, SECRET);
        (fetch(&mut sdk, 0, 10), fetch(&mut sdk, 0, 10))
    });
    let err = first.unwrap_err();
    assert_eq!(err, SdkError { ret: 10001 });
    assert!(err.is_transient());
    assert_eq!(err.to_string(), "ret 10001: network error");
    assert_eq!(second.unwrap().chatdata.len(), 1);
}

#[test]
fn a_server_errcode_comes_in_the_body() {
    let _serial = serial();
    let (corp_id, _ring) = corp("errcode");
    let state = state();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "hi");
    state.archive_fault(&corp_id, ArchiveFault::Errcode(301042), 1);
    let c = corp_id;
    let (first, second) = blocking(move || {
        let mut sdk = sdk(&c, SECRET);
        (
            fetch(&mut sdk, 0, 10).unwrap(),
            fetch(&mut sdk, 0, 10).unwrap(),
        )
    });
    assert_eq!(first.errcode, 301042);
    assert!(first.errmsg.contains("301042"), "{}", first.errmsg);
    assert!(first.chatdata.is_empty());
    assert_eq!(second.errcode, 0);
    assert_eq!(second.chatdata.len(), 1);
}

#[test]
fn a_wrong_secret_is_40001() {
    let _serial = serial();
    let (corp_id, _ring) = corp("secret");
    state().archive_text(&corp_id, "zhangsan", &["lisi"], "", "hi");
    let c = corp_id;
    let batch = blocking(move || fetch(&mut sdk(&c, "not-the-secret"), 0, 10).unwrap());
    assert_eq!(batch.errcode, 40001);
    assert!(batch.chatdata.is_empty());
    let batch = blocking(|| fetch(&mut sdk("wwfinanceunknowncorp", SECRET), 0, 10).unwrap());
    assert_eq!(batch.errcode, 40001);
}

#[test]
fn a_key_version_the_ring_lacks_is_unknown_version() {
    let _serial = serial();
    let (corp_id, ring) = corp("version");
    let state = state();
    state
        .add_archive_public_key(&corp_id, 3, &key("v3.pub.pem"))
        .unwrap();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "new key");
    let c = corp_id;
    let batch = blocking(move || fetch(&mut sdk(&c, SECRET), 0, 10).unwrap());
    let record = &batch.chatdata[0];
    assert_eq!(record.publickey_ver, 3, "the last key added is current");
    assert_eq!(
        ring.unwrap_key(3, &record.encrypt_random_key),
        Err(KeyError::UnknownVersion(3))
    );
}

#[test]
fn a_record_wrapped_with_another_key_is_an_rsa_error() {
    let _serial = serial();
    let (corp_id, mut ring) = corp("otherkey");
    let state = state();
    // The corp uploaded the 'other' public key as v2; the server holds the real v2.
    state
        .add_archive_public_key(&corp_id, 2, &key("vother.pub.pem"))
        .unwrap();
    ring.insert_pem(2, &key("v2.pem")).unwrap();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "hi");
    state.archive_push(&corp_id, "{\"msgid\":\"old-v1\"}", Some(1));
    let c = corp_id;
    let batch = blocking(move || fetch(&mut sdk(&c, SECRET), 0, 10).unwrap());
    let wrong = &batch.chatdata[0];
    assert_eq!(wrong.publickey_ver, 2);
    assert_eq!(
        ring.unwrap_key(2, &wrong.encrypt_random_key),
        Err(KeyError::Rsa(2))
    );
    // An old record of v1 still opens.
    assert_eq!(batch.chatdata[1].publickey_ver, 1);
    assert_eq!(open(&ring, &batch.chatdata[1]), b"{\"msgid\":\"old-v1\"}");
}

#[test]
fn a_damaged_payload_fails_decryption_with_10006() {
    let _serial = serial();
    let (corp_id, ring) = corp("corrupt");
    let state = state();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "hi");
    state.archive_fault(&corp_id, ArchiveFault::CorruptPayload, 1);
    let c = corp_id;
    let (damaged, clean) = blocking(move || {
        let mut sdk = sdk(&c, SECRET);
        (
            fetch(&mut sdk, 0, 10).unwrap(),
            fetch(&mut sdk, 0, 10).unwrap(),
        )
    });
    let record = &damaged.chatdata[0];
    let key = ring
        .unwrap_key(record.publickey_ver, &record.encrypt_random_key)
        .unwrap();
    let library = env().library.clone();
    let msg = record.encrypt_chat_msg.clone();
    let result = blocking(move || library.decrypt_data(&key, &msg));
    assert_eq!(result, Err(SdkError { ret: 10006 }));
    // The next fetch seals afresh and opens.
    assert_eq!(
        json(&open(&ring, &clean.chatdata[0]))["text"]["content"],
        "hi"
    );
    // The stand-in tells a mangled key apart from a wrong one.
    let library = env().library.clone();
    let msg = clean.chatdata[0].encrypt_chat_msg.clone();
    let (empty, wrong) = blocking(move || {
        (
            library.decrypt_data("", &msg),
            library.decrypt_data("ABCDEFGHIJKLMNOPQRSTUVWXYZ012345", &msg),
        )
    });
    assert_eq!(empty, Err(SdkError { ret: 10008 }));
    assert_eq!(wrong, Err(SdkError { ret: 10006 }));
}

#[test]
fn media_comes_in_three_chunks_nul_bytes_and_all() {
    let _serial = serial();
    let (corp_id, _ring) = corp("media");
    let bytes: Vec<u8> = (0..1_300_000u32)
        .map(|i| if i % 7 == 0 { 0 } else { (i % 251) as u8 })
        .collect();
    let media = state().archive_add_media(&corp_id, bytes.clone());
    assert_eq!(media.size, 1_300_000);
    let c = corp_id;
    let fileid = media.sdkfileid.clone();
    let chunks: Vec<MediaChunk> = blocking(move || {
        let mut sdk = sdk(&c, SECRET);
        let mut chunks = Vec::new();
        let mut index = String::new();
        loop {
            let chunk = sdk
                .get_media_data(&index, &fileid, "", "", TIMEOUT)
                .unwrap();
            index = chunk.next_index.clone();
            let finished = chunk.finished;
            chunks.push(chunk);
            if finished || chunks.len() > 10 {
                break;
            }
        }
        chunks
    });
    let sizes: Vec<usize> = chunks.iter().map(|c| c.data.len()).collect();
    assert_eq!(sizes, vec![524_288, 524_288, 1_300_000 - 2 * 524_288]);
    assert_eq!(chunks[0].next_index, "Range:bytes=524288-1048575");
    assert!(!chunks[0].finished && !chunks[1].finished && chunks[2].finished);
    let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
    assert_eq!(joined.len(), bytes.len());
    assert!(joined == bytes, "the bytes differ");
    let md5: String = Md5::digest(&joined)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(md5, media.md5sum);
}

#[test]
fn an_unknown_sdkfileid_is_10005() {
    let _serial = serial();
    let (corp_id, _ring) = corp("nofile");
    let c = corp_id.clone();
    let result =
        blocking(move || sdk(&c, SECRET).get_media_data("", "no-such-file", "", "", TIMEOUT));
    assert_eq!(result, Err(SdkError { ret: 10005 }));
    // A media fault applies to media calls only.
    let media = state().archive_add_media(&corp_id, vec![1, 2, 3]);
    state().archive_fault(&corp_id, ArchiveFault::MediaRet(10001), 1);
    let c = corp_id;
    let (chat, first, second) = blocking(move || {
        let mut sdk = sdk(&c, SECRET);
        (
            fetch(&mut sdk, 0, 10),
            sdk.get_media_data("", &media.sdkfileid, "", "", TIMEOUT),
            sdk.get_media_data("", &media.sdkfileid, "", "", TIMEOUT),
        )
    });
    assert!(chat.is_ok());
    assert_eq!(first, Err(SdkError { ret: 10001 }));
    let second = second.unwrap();
    assert_eq!(second.data, vec![1, 2, 3]);
    assert!(second.finished);
}

#[test]
fn a_leak_directive_grows_rss_and_still_answers() {
    let _serial = serial();
    let (corp_id, _ring) = corp("leak");
    let state = state();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "hi");
    state.archive_fault(&corp_id, ArchiveFault::Leak { bytes: 64 << 20 }, 1);
    let c = corp_id;
    let mut sdk = blocking(move || sdk(&c, SECRET));
    let before = vm_rss_kib();
    let (sdk_back, batch) = blocking(move || {
        let batch = fetch(&mut sdk, 0, 10);
        (sdk, batch)
    });
    let after = vm_rss_kib();
    drop(sdk_back);
    assert_eq!(
        batch.unwrap().chatdata.len(),
        1,
        "answers normally after leaking"
    );
    assert!(
        after >= before + 60 * 1024,
        "VmRSS grew by {} KiB only",
        after.saturating_sub(before)
    );
}

#[test]
fn records_past_the_retention_window_are_gone() {
    let _serial = serial();
    let (corp_id, _ring) = corp("retention");
    let state = state();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "old");
    state.advance_clock(Duration::from_secs(5 * 86_400 + 60));
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "new");
    let c = corp_id;
    let batch = blocking(move || fetch(&mut sdk(&c, SECRET), 0, 10).unwrap());
    let seqs: Vec<u64> = batch.chatdata.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, vec![2]);
}

#[test]
fn a_missing_library_is_an_open_error() {
    let path = Path::new("/nonexistent/dir/libWeWorkFinanceSdk_C.so");
    match FinanceLibrary::open(path) {
        Err(LoadError::Open { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(!reason.is_empty());
        }
        other => panic!("expected LoadError::Open, got {other:?}"),
    }
}

#[test]
fn a_library_without_the_functions_is_refused() {
    let path = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    assert!(
        path.exists(),
        "this test expects glibc at {}",
        path.display()
    );
    let err = FinanceLibrary::open(path).unwrap_err();
    assert_eq!(
        err,
        LoadError::MissingSymbol {
            path: path.to_owned(),
            symbol: "NewSdk"
        }
    );
    assert!(err.to_string().contains("NewSdk"), "{err}");
}

#[test]
fn strings_with_nul_are_refused_without_a_call() {
    let _serial = serial();
    let (corp_id, _ring) = corp("nul");
    let state = state();
    let media = state.archive_add_media(&corp_id, vec![7; 10]);
    let (calls, media_calls) = (
        state.archive_calls(&corp_id),
        state.archive_media_calls(&corp_id),
    );
    let c = corp_id.clone();
    let results = blocking(move || {
        let library = &env().library;
        let mut fresh = library.new_sdk().unwrap();
        let init = fresh.init("ww\0corp", SECRET);
        let mut sdk = sdk(&c, SECRET);
        (
            init,
            sdk.get_chat_data(0, 10, "socks5://\0", "", TIMEOUT)
                .map(|_| ()),
            sdk.get_chat_data(0, 10, "", "user:\0pass", TIMEOUT)
                .map(|_| ()),
            sdk.get_media_data("", &format!("{}\0", media.sdkfileid), "", "", TIMEOUT)
                .map(|_| ()),
            sdk.get_media_data("Range:\0", &media.sdkfileid, "", "", TIMEOUT)
                .map(|_| ()),
            library.decrypt_data("key\0", "msg").map(|_| ()),
            library.decrypt_data("key", "m\0sg").map(|_| ()),
        )
    });
    let nul = Err(SdkError { ret: 10000 });
    assert_eq!(results.0, nul);
    assert_eq!(results.1, nul);
    assert_eq!(results.2, nul);
    assert_eq!(results.3, nul);
    assert_eq!(results.4, nul);
    assert_eq!(results.5, nul);
    assert_eq!(results.6, nul);
    assert_eq!(state.archive_calls(&corp_id), calls);
    assert_eq!(state.archive_media_calls(&corp_id), media_calls);
}

/// Tells [`child_calls_the_library_under_a_fault`] which fault to call under.
const CHILD_ENV: &str = "FINANCE_LIBRARY_TEST_CHILD";

/// The child process of the crash and hang tests; does nothing unless started by them.
#[test]
#[ignore = "run in a child process by the crash and hang tests"]
fn child_calls_the_library_under_a_fault() {
    let Ok(kind) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (corp_id, _ring) = corp("child");
    let state = state();
    state.archive_text(&corp_id, "zhangsan", &["lisi"], "", "hi");
    let media = state.archive_add_media(&corp_id, vec![0; 100]);
    let fault = match kind.as_str() {
        "crash" => ArchiveFault::Crash,
        "media-crash" => ArchiveFault::MediaCrash,
        _ => ArchiveFault::Hang,
    };
    state.archive_fault(&corp_id, fault, 1);
    let returned = blocking(move || {
        let mut sdk = sdk(&corp_id, SECRET);
        if kind == "media-crash" {
            sdk.get_media_data("", &media.sdkfileid, "", "", 2)
                .map(|_| ())
        } else {
            sdk.get_chat_data(0, 10, "", "", 2).map(|_| ())
        }
    });
    panic!("the call returned: {returned:?}");
}

fn child(kind: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_calls_the_library_under_a_fault",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, kind)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

const SIGSEGV: i32 = 11;

#[test]
fn a_crash_directive_kills_the_calling_process_with_sigsegv() {
    let _ = standin_path();
    for kind in ["crash", "media-crash"] {
        let status = child(kind).wait().unwrap();
        assert_eq!(status.signal(), Some(SIGSEGV), "{kind}: {status:?}");
    }
}

#[test]
fn a_hang_directive_outlasts_the_calls_timeout() {
    let _ = standin_path();
    let mut child = child("hang");
    // The call's timeout is 2 s; well after it the child is still inside the call.
    std::thread::sleep(Duration::from_secs(6));
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(still_running, "the hanging call returned");
}
