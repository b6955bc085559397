//! A stand-in for WeCom's closed chat-archive library `libWeWorkFinanceSdk_C.so`
//! (`shared/wecom-protocol.md` §5.1): the same 17 C functions with the same signatures, so the
//! loader (`wecom_sdk::archive::ffi`) opens either by path with no code change.
//!
//! Instead of WeCom's backend it talks to the WeCom emulator (`wecom_sdk::testkit`) over plain
//! HTTP/1.1 at the URL in [`STANDIN_URL_ENV`] (read by `Init`), with the private wire format of
//! [`wecom_sdk::archive::standin`]; its `encrypt_chat_msg` payloads are that module's test
//! scheme. The emulator can tell it to act out the library's failure modes ([`Directive`]): crash
//! with a real SIGSEGV, hang, leak memory, or return a code.
//!
//! Return codes follow the header: 10000 for bad parameters (NULL pointers, `limit` > 1000, text
//! that is not UTF-8), 10001 when the emulator cannot be reached or does not answer within
//! `timeout` seconds (≤ 0 means 30), 10002 for an answer that does not parse, 10003 for a
//! missing URL or any internal failure (a panic never crosses the C boundary), 10006/10008 in
//! `DecryptData`. Buffers in a `Slice_t` or `MediaData_t` are Rust allocations with a trailing
//! NUL (not counted in the length), freed by `FreeSlice`/`FreeMediaData`; a slice or holder
//! given to a call again has its old buffers freed first, so pass only ones from `NewSlice` /
//! `NewMediaData` (or zeroed ones).
#![allow(
    unsafe_code,
    reason = "this crate is a C library's stand-in: every export takes and returns raw pointers"
)]
#![allow(
    clippy::not_unsafe_ptr_arg_deref,
    reason = "C entry points: the C caller upholds the header's contract for every pointer"
)]
#![warn(missing_docs)]

use std::ffi::{CStr, c_char, c_int, c_uint, c_ulonglong};
use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use wecom_sdk::archive::ffi::{self, MediaData_t, Slice_t, WeWorkFinanceSdk_t};
use wecom_sdk::archive::standin::{
    self, CHATDATA_PATH, ChatDataRequest, ChatDataResponse, Directive, MEDIA_PATH, MediaRequest,
    MediaResponse, STANDIN_URL_ENV,
};

// The exports have exactly the loader's (the header's) types.
const _: ffi::NewSdkFn = NewSdk;
const _: ffi::InitFn = Init;
const _: ffi::GetChatDataFn = GetChatData;
const _: ffi::DecryptDataFn = DecryptData;
const _: ffi::GetMediaDataFn = GetMediaData;
const _: ffi::DestroySdkFn = DestroySdk;
const _: ffi::NewSliceFn = NewSlice;
const _: ffi::FreeSliceFn = FreeSlice;
const _: ffi::GetContentFromSliceFn = GetContentFromSlice;
const _: ffi::GetSliceLenFn = GetSliceLen;
const _: ffi::NewMediaDataFn = NewMediaData;
const _: ffi::FreeMediaDataFn = FreeMediaData;
const _: ffi::GetOutIndexBufFn = GetOutIndexBuf;
const _: ffi::GetDataFn = GetData;
const _: ffi::GetIndexLenFn = GetIndexLen;
const _: ffi::GetDataLenFn = GetDataLen;
const _: ffi::IsMediaDataFinishFn = IsMediaDataFinish;

const OK: c_int = 0;
const PARAMETER: c_int = 10000;
const NETWORK: c_int = 10001;
const PARSE: c_int = 10002;
const SYSTEM: c_int = 10003;
const DECRYPT: c_int = 10006;
const BAD_KEY: c_int = 10008;

/// What a `WeWorkFinanceSdk_t*` points to.
#[derive(Default)]
struct Handle {
    corpid: String,
    secret: String,
    /// `None` until `Init` succeeded.
    url: Option<Endpoint>,
}

/// `http://HOST:PORT` split up.
#[derive(Clone)]
struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &str) -> Option<Self> {
        let rest = url.trim().strip_prefix("http://")?;
        let authority = rest.split('/').next()?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (authority, 80),
        };
        if host.is_empty() {
            return None;
        }
        Some(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Runs `body`, turning a panic into `fallback`.
fn guarded<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// A C string argument as UTF-8; `None` for NULL or invalid text.
///
/// # Safety
///
/// `p` is NULL or a NUL-terminated string that stays valid for `'a`.
unsafe fn text<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}

/// `bytes` plus a trailing NUL as a leaked allocation, with the length of `bytes`.
fn leak_buffer(bytes: &[u8]) -> Option<(*mut c_char, c_int)> {
    let len = c_int::try_from(bytes.len())
        .ok()
        .filter(|l| *l < c_int::MAX)?;
    let mut owned = Vec::with_capacity(bytes.len() + 1);
    owned.extend_from_slice(bytes);
    owned.push(0);
    let raw: *mut [u8] = Box::into_raw(owned.into_boxed_slice());
    Some((raw.cast::<c_char>(), len))
}

/// Frees what [`leak_buffer`] made (NULL is a no-op).
///
/// # Safety
///
/// `buf` is NULL or came from [`leak_buffer`] with this `len`, and is not used afterwards.
unsafe fn free_buffer(buf: *mut c_char, len: c_int) {
    if buf.is_null() {
        return;
    }
    let Ok(len) = usize::try_from(len) else {
        return; // not ours: leak rather than free with a wrong size
    };
    let slice = std::ptr::slice_from_raw_parts_mut(buf.cast::<u8>(), len + 1);
    // SAFETY: by the contract, `buf` is a boxed `[u8]` of `len + 1` bytes from `leak_buffer`.
    drop(unsafe { Box::from_raw(slice) });
}

/// Puts `bytes` into the slice, freeing what it held.
///
/// # Safety
///
/// `slice` is a valid, non-NULL `Slice_t` whose buffer is NULL or ours.
unsafe fn fill_slice(slice: *mut Slice_t, bytes: &[u8]) -> c_int {
    let Some((buf, len)) = leak_buffer(bytes) else {
        return SYSTEM;
    };
    // SAFETY: `slice` is valid by the contract; its old buffer is ours (or NULL).
    unsafe {
        free_buffer((*slice).buf, (*slice).len);
        (*slice).buf = buf;
        (*slice).len = len;
    }
    OK
}

/// Acts out a directive. `Some(ret)` means return that now; `None` means answer normally.
fn obey(directive: Option<Directive>) -> Option<c_int> {
    match directive? {
        Directive::Crash => {
            // SAFETY: deliberately not: a write through NULL, so the process dies of a real
            // SIGSEGV, as the real library is known to crash. The supervisor expects exactly that.
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
            Some(SYSTEM)
        }
        Directive::Hang => {
            std::thread::sleep(Duration::from_secs(3600));
            Some(NETWORK)
        }
        Directive::Leak { bytes } => {
            let Ok(bytes) = usize::try_from(bytes) else {
                return Some(SYSTEM);
            };
            let mut block: Vec<u8> = Vec::new();
            if block.try_reserve_exact(bytes).is_err() {
                return Some(SYSTEM);
            }
            block.resize(bytes, 0);
            let leaked: &'static mut [u8] = Box::leak(block.into_boxed_slice());
            for i in (0..leaked.len()).step_by(4096) {
                if let Some(b) = leaked.get_mut(i) {
                    *b = 1;
                }
            }
            std::hint::black_box(&leaked);
            None
        }
        Directive::Ret { ret } => Some(ret),
        Directive::Print => {
            use std::io::Write as _;
            let mut out = std::io::stdout();
            let _ = out.write_all(
                b"WeWorkFinanceSdk: debug: GetChatData limit=1000\n\0\0\0\x09{\"op\":1}",
            );
            let _ = out.flush();
            None
        }
    }
}

/// POSTs `body` as JSON to `path` and returns the response body of a 200. Errors are return
/// codes: 10001 unreachable, slow or not 200; 10002 a malformed answer.
fn post(endpoint: &Endpoint, path: &str, body: &[u8], timeout: c_int) -> Result<Vec<u8>, c_int> {
    let secs = u64::try_from(timeout).ok().filter(|s| *s > 0).unwrap_or(30);
    let timeout = Duration::from_secs(secs);
    let addrs = (endpoint.host.as_str(), endpoint.port)
        .to_socket_addrs()
        .map_err(|_| NETWORK)?;
    let mut stream = None;
    for addr in addrs {
        if let Ok(s) = TcpStream::connect_timeout(&addr, timeout) {
            stream = Some(s);
            break;
        }
    }
    let mut stream = stream.ok_or(NETWORK)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|_| NETWORK)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|_| NETWORK)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        endpoint.host,
        endpoint.port,
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(|_| NETWORK)?;
    stream.write_all(body).map_err(|_| NETWORK)?;
    stream.flush().map_err(|_| NETWORK)?;
    read_response(&mut stream)
}

/// The largest answer accepted (a 1000-record batch is about 1 MB; a chunk under 1 MB).
const MAX_BODY: usize = 64 << 20;

fn read_response(stream: &mut TcpStream) -> Result<Vec<u8>, c_int> {
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err(PARSE);
        }
        let n = stream.read(&mut chunk).map_err(|_| NETWORK)?;
        if n == 0 {
            return Err(NETWORK);
        }
        buf.extend_from_slice(chunk.get(..n).ok_or(SYSTEM)?);
    };
    let head = std::str::from_utf8(buf.get(..header_end).ok_or(PARSE)?).map_err(|_| PARSE)?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .ok_or(PARSE)?;
    if status != "200" {
        return Err(NETWORK);
    }
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().map_err(|_| PARSE)?);
            } else if name.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err(PARSE); // the emulator always sends Content-Length
            }
        }
    }
    let mut body = buf.split_off(header_end + 4);
    match length {
        Some(len) if len > MAX_BODY => return Err(PARSE),
        Some(len) => {
            while body.len() < len {
                let n = stream.read(&mut chunk).map_err(|_| NETWORK)?;
                if n == 0 {
                    return Err(NETWORK);
                }
                body.extend_from_slice(chunk.get(..n).ok_or(SYSTEM)?);
            }
            body.truncate(len);
        }
        None => loop {
            let n = stream.read(&mut chunk).map_err(|_| NETWORK)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(chunk.get(..n).ok_or(SYSTEM)?);
            if body.len() > MAX_BODY {
                return Err(PARSE);
            }
        },
    }
    Ok(body)
}

/// The `Handle` behind `sdk`, if initialised.
///
/// # Safety
///
/// `sdk` is NULL or a live handle from `NewSdk`.
unsafe fn initialised<'a>(sdk: *mut WeWorkFinanceSdk_t) -> Result<&'a Handle, c_int> {
    if sdk.is_null() {
        return Err(PARAMETER);
    }
    // SAFETY: non-NULL, and by the contract a live `Handle` from `NewSdk`.
    let handle = unsafe { &*sdk.cast::<Handle>() };
    if handle.url.is_none() {
        return Err(SYSTEM);
    }
    Ok(handle)
}

/// `WeWorkFinanceSdk_t* NewSdk();` — a fresh, uninitialised handle.
#[unsafe(no_mangle)]
pub extern "C" fn NewSdk() -> *mut WeWorkFinanceSdk_t {
    guarded(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(Handle::default())).cast::<WeWorkFinanceSdk_t>()
    })
}

/// `int Init(WeWorkFinanceSdk_t* sdk, const char* corpid, const char* secret);` — stores the
/// credentials and reads the emulator's URL from [`STANDIN_URL_ENV`] (missing or not
/// `http://HOST:PORT`: 10003). The credentials are checked by the emulator on each call.
#[unsafe(no_mangle)]
pub extern "C" fn Init(
    sdk: *mut WeWorkFinanceSdk_t,
    corpid: *const c_char,
    secret: *const c_char,
) -> c_int {
    guarded(SYSTEM, || {
        if sdk.is_null() {
            return PARAMETER;
        }
        // SAFETY: the caller passes NUL-terminated strings (or NULL, refused here).
        let (Some(corpid), Some(secret)) = (unsafe { text(corpid) }, unsafe { text(secret) })
        else {
            return PARAMETER;
        };
        let Some(url) = std::env::var(STANDIN_URL_ENV)
            .ok()
            .and_then(|u| Endpoint::parse(&u))
        else {
            return SYSTEM;
        };
        // SAFETY: non-NULL and a live handle from `NewSdk`; the caller does not use it from
        // another thread during the call.
        let handle = unsafe { &mut *sdk.cast::<Handle>() };
        handle.corpid = corpid.to_owned();
        handle.secret = secret.to_owned();
        handle.url = Some(url);
        OK
    })
}

/// `int GetChatData(WeWorkFinanceSdk_t* sdk, unsigned long long seq, unsigned int limit,
/// const char* proxy, const char* passwd, int timeout, Slice_t* chatDatas);` — asks the
/// emulator for records after `seq`; the proxy is ignored.
#[unsafe(no_mangle)]
pub extern "C" fn GetChatData(
    sdk: *mut WeWorkFinanceSdk_t,
    seq: c_ulonglong,
    limit: c_uint,
    proxy: *const c_char,
    passwd: *const c_char,
    timeout: c_int,
    chat_datas: *mut Slice_t,
) -> c_int {
    guarded(SYSTEM, || {
        if limit > 1000 || proxy.is_null() || passwd.is_null() || chat_datas.is_null() {
            return PARAMETER;
        }
        // SAFETY: NULL or a live handle from `NewSdk`, by the header's contract.
        let handle = match unsafe { initialised(sdk) } {
            Ok(h) => h,
            Err(ret) => return ret,
        };
        let Some(url) = handle.url.as_ref() else {
            return SYSTEM;
        };
        let request = ChatDataRequest {
            corpid: handle.corpid.clone(),
            secret: handle.secret.clone(),
            seq,
            limit,
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return SYSTEM;
        };
        let answer = match post(url, CHATDATA_PATH, &body, timeout) {
            Ok(a) => a,
            Err(ret) => return ret,
        };
        let Ok(answer) = serde_json::from_slice::<ChatDataResponse>(&answer) else {
            return PARSE;
        };
        if let Some(ret) = obey(answer.directive) {
            return ret;
        }
        // SAFETY: non-NULL, and a slice from `NewSlice` (or zeroed) by the contract.
        unsafe { fill_slice(chat_datas, answer.body.as_bytes()) }
    })
}

/// `int DecryptData(const char* encrypt_key, const char* encrypt_msg, Slice_t* msg);` — opens a
/// payload of the test scheme ([`standin::open`]): 10008 for an empty or non-printable key,
/// 10006 when it does not open.
#[unsafe(no_mangle)]
pub extern "C" fn DecryptData(
    encrypt_key: *const c_char,
    encrypt_msg: *const c_char,
    msg: *mut Slice_t,
) -> c_int {
    guarded(SYSTEM, || {
        if encrypt_key.is_null() || encrypt_msg.is_null() || msg.is_null() {
            return PARAMETER;
        }
        // SAFETY: non-NULL NUL-terminated strings by the header's contract.
        let Some(key) = (unsafe { text(encrypt_key) }) else {
            return BAD_KEY;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return BAD_KEY;
        }
        // SAFETY: as above.
        let Some(sealed) = (unsafe { text(encrypt_msg) }) else {
            return DECRYPT;
        };
        let Ok(plain) = standin::open(key, sealed) else {
            return DECRYPT;
        };
        // SAFETY: non-NULL, and a slice from `NewSlice` (or zeroed) by the contract.
        unsafe { fill_slice(msg, &plain) }
    })
}

/// `int GetMediaData(WeWorkFinanceSdk_t* sdk, const char* indexbuf, const char* sdkFileid,
/// const char* proxy, const char* passwd, int timeout, MediaData_t* media_data);` — one chunk
/// from the emulator; the proxy is ignored.
#[unsafe(no_mangle)]
pub extern "C" fn GetMediaData(
    sdk: *mut WeWorkFinanceSdk_t,
    indexbuf: *const c_char,
    sdk_fileid: *const c_char,
    proxy: *const c_char,
    passwd: *const c_char,
    timeout: c_int,
    media_data: *mut MediaData_t,
) -> c_int {
    guarded(SYSTEM, || {
        if proxy.is_null() || passwd.is_null() || media_data.is_null() {
            return PARAMETER;
        }
        // SAFETY: NUL-terminated strings or NULL (refused), by the header's contract.
        let (Some(indexbuf), Some(sdkfileid)) =
            (unsafe { text(indexbuf) }, unsafe { text(sdk_fileid) })
        else {
            return PARAMETER;
        };
        // SAFETY: NULL or a live handle from `NewSdk`.
        let handle = match unsafe { initialised(sdk) } {
            Ok(h) => h,
            Err(ret) => return ret,
        };
        let Some(url) = handle.url.as_ref() else {
            return SYSTEM;
        };
        let request = MediaRequest {
            corpid: handle.corpid.clone(),
            secret: handle.secret.clone(),
            sdkfileid: sdkfileid.to_owned(),
            indexbuf: indexbuf.to_owned(),
        };
        let Ok(body) = serde_json::to_vec(&request) else {
            return SYSTEM;
        };
        let answer = match post(url, MEDIA_PATH, &body, timeout) {
            Ok(a) => a,
            Err(ret) => return ret,
        };
        let Ok(answer) = serde_json::from_slice::<MediaResponse>(&answer) else {
            return PARSE;
        };
        if let Some(ret) = obey(answer.directive) {
            return ret;
        }
        if answer.ret != OK {
            return answer.ret;
        }
        let Ok(data) = STANDARD.decode(answer.data_b64.as_bytes()) else {
            return PARSE;
        };
        let (Some((data, data_len)), Some((index, index_len))) = (
            leak_buffer(&data),
            leak_buffer(answer.outindexbuf.as_bytes()),
        ) else {
            return SYSTEM;
        };
        // SAFETY: non-NULL, and a holder from `NewMediaData` (or zeroed) whose buffers are ours.
        unsafe {
            let m = &mut *media_data;
            free_buffer(m.data, m.data_len);
            free_buffer(m.outindexbuf, m.out_len);
            m.data = data;
            m.data_len = data_len;
            m.outindexbuf = index;
            m.out_len = index_len;
            m.is_finish = c_int::from(answer.is_finish);
        }
        OK
    })
}

/// `void DestroySdk(WeWorkFinanceSdk_t* sdk);` — NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn DestroySdk(sdk: *mut WeWorkFinanceSdk_t) {
    guarded((), || {
        if !sdk.is_null() {
            // SAFETY: a handle from `NewSdk`, destroyed once by the contract.
            drop(unsafe { Box::from_raw(sdk.cast::<Handle>()) });
        }
    });
}

/// `Slice_t* NewSlice();` — an empty slice.
#[unsafe(no_mangle)]
pub extern "C" fn NewSlice() -> *mut Slice_t {
    guarded(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(Slice_t {
            buf: std::ptr::null_mut(),
            len: 0,
        }))
    })
}

/// `void FreeSlice(Slice_t* slice);` — the slice and its buffer; NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn FreeSlice(slice: *mut Slice_t) {
    guarded((), || {
        if slice.is_null() {
            return;
        }
        // SAFETY: a slice from `NewSlice`, freed once by the contract; its buffer is ours.
        let slice = unsafe { Box::from_raw(slice) };
        // SAFETY: the buffer is NULL or from `leak_buffer` with this length.
        unsafe { free_buffer(slice.buf, slice.len) };
    });
}

/// `char* GetContentFromSlice(Slice_t* slice);` — NULL for a NULL slice.
#[unsafe(no_mangle)]
pub extern "C" fn GetContentFromSlice(slice: *mut Slice_t) -> *mut c_char {
    if slice.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: non-NULL and a live slice by the contract.
    unsafe { (*slice).buf }
}

/// `int GetSliceLen(Slice_t* slice);` — 0 for a NULL slice.
#[unsafe(no_mangle)]
pub extern "C" fn GetSliceLen(slice: *mut Slice_t) -> c_int {
    if slice.is_null() {
        return 0;
    }
    // SAFETY: non-NULL and a live slice by the contract.
    unsafe { (*slice).len }
}

/// `MediaData_t* NewMediaData();` — an empty holder.
#[unsafe(no_mangle)]
pub extern "C" fn NewMediaData() -> *mut MediaData_t {
    guarded(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(MediaData_t {
            outindexbuf: std::ptr::null_mut(),
            out_len: 0,
            data: std::ptr::null_mut(),
            data_len: 0,
            is_finish: 0,
        }))
    })
}

/// `void FreeMediaData(MediaData_t* media_data);` — the holder and its buffers; NULL is a no-op.
#[unsafe(no_mangle)]
pub extern "C" fn FreeMediaData(media_data: *mut MediaData_t) {
    guarded((), || {
        if media_data.is_null() {
            return;
        }
        // SAFETY: a holder from `NewMediaData`, freed once by the contract.
        let m = unsafe { Box::from_raw(media_data) };
        // SAFETY: both buffers are NULL or from `leak_buffer` with these lengths.
        unsafe {
            free_buffer(m.data, m.data_len);
            free_buffer(m.outindexbuf, m.out_len);
        }
    });
}

/// `char* GetOutIndexBuf(MediaData_t* media_data);` — NULL for a NULL holder.
#[unsafe(no_mangle)]
pub extern "C" fn GetOutIndexBuf(media_data: *mut MediaData_t) -> *mut c_char {
    if media_data.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: non-NULL and a live holder by the contract.
    unsafe { (*media_data).outindexbuf }
}

/// `char* GetData(MediaData_t* media_data);` — NULL for a NULL holder.
#[unsafe(no_mangle)]
pub extern "C" fn GetData(media_data: *mut MediaData_t) -> *mut c_char {
    if media_data.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: non-NULL and a live holder by the contract.
    unsafe { (*media_data).data }
}

/// `int GetIndexLen(MediaData_t* media_data);` — 0 for a NULL holder.
#[unsafe(no_mangle)]
pub extern "C" fn GetIndexLen(media_data: *mut MediaData_t) -> c_int {
    if media_data.is_null() {
        return 0;
    }
    // SAFETY: non-NULL and a live holder by the contract.
    unsafe { (*media_data).out_len }
}

/// `int GetDataLen(MediaData_t* media_data);` — 0 for a NULL holder.
#[unsafe(no_mangle)]
pub extern "C" fn GetDataLen(media_data: *mut MediaData_t) -> c_int {
    if media_data.is_null() {
        return 0;
    }
    // SAFETY: non-NULL and a live holder by the contract.
    unsafe { (*media_data).data_len }
}

/// `int IsMediaDataFinish(MediaData_t* media_data);` — 1 after the last chunk; 0 for NULL.
#[unsafe(no_mangle)]
pub extern "C" fn IsMediaDataFinish(media_data: *mut MediaData_t) -> c_int {
    if media_data.is_null() {
        return 0;
    }
    // SAFETY: non-NULL and a live holder by the contract.
    unsafe { (*media_data).is_finish }
}
