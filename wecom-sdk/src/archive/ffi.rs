//! WeCom's closed chat-archive library (`libWeWorkFinanceSdk_C.so`, `shared/wecom-protocol.md`
//! §5.1) bound at run time with `libloading`: all 17 functions of the header, with their exact C
//! signatures, looked up when the library is opened.
//!
//! The real library and the stand-in (`wecom-sdk/finance-standin`, served by the emulator) drop in
//! by path alike. Results are copied out by their length (never as C strings: media chunks hold
//! NUL bytes) and the library's buffers freed at once.
//!
//! Calls block on the network for up to `timeout` seconds: run them in
//! `tokio::task::spawn_blocking`, one [`Sdk`] per corp for the life of the process, each used by
//! one thread at a time (`&mut self`). A crash inside the library takes the process with it, so
//! the server runs this in a child process.
#![allow(
    unsafe_code,
    reason = "the one place of the crate that calls into a C library"
)]

use std::ffi::{CString, c_char, c_int, c_uint, c_ulonglong};
use std::fmt;
use std::marker::{PhantomData, PhantomPinned};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The library's opaque handle (`WeWorkFinanceSdk_t`).
#[repr(C)]
#[allow(
    non_camel_case_types,
    reason = "the C header's name, so that the binding reads like it"
)]
pub struct WeWorkFinanceSdk_t {
    _opaque: [u8; 0],
    _not_send_sync_unpin: PhantomData<(*mut u8, PhantomPinned)>,
}

/// The header's `Slice_t`: an output buffer for text results.
#[repr(C)]
#[derive(Debug)]
#[allow(
    non_camel_case_types,
    reason = "the C header's name, so that the binding reads like it"
)]
pub struct Slice_t {
    /// The bytes, owned by the library; read `len` of them.
    pub buf: *mut c_char,
    /// How many bytes `buf` holds.
    pub len: c_int,
}

/// The header's `MediaData_t`: one chunk of a media file.
#[repr(C)]
#[derive(Debug)]
#[allow(
    non_camel_case_types,
    reason = "the C header's name, so that the binding reads like it"
)]
pub struct MediaData_t {
    /// The index to pass on the next call (text, e.g. `Range:bytes=524288-1048575`).
    pub outindexbuf: *mut c_char,
    /// Length of `outindexbuf`.
    pub out_len: c_int,
    /// The chunk, binary (may hold NUL bytes).
    pub data: *mut c_char,
    /// Length of `data`.
    pub data_len: c_int,
    /// 1 when this was the last chunk.
    pub is_finish: c_int,
}

/// `WeWorkFinanceSdk_t* NewSdk();`
pub type NewSdkFn = unsafe extern "C" fn() -> *mut WeWorkFinanceSdk_t;
/// `int Init(WeWorkFinanceSdk_t* sdk, const char* corpid, const char* secret);`
pub type InitFn =
    unsafe extern "C" fn(*mut WeWorkFinanceSdk_t, *const c_char, *const c_char) -> c_int;
/// `int GetChatData(WeWorkFinanceSdk_t* sdk, unsigned long long seq, unsigned int limit,
/// const char* proxy, const char* passwd, int timeout, Slice_t* chatDatas);`
pub type GetChatDataFn = unsafe extern "C" fn(
    *mut WeWorkFinanceSdk_t,
    c_ulonglong,
    c_uint,
    *const c_char,
    *const c_char,
    c_int,
    *mut Slice_t,
) -> c_int;
/// `int DecryptData(const char* encrypt_key, const char* encrypt_msg, Slice_t* msg);`
pub type DecryptDataFn = unsafe extern "C" fn(*const c_char, *const c_char, *mut Slice_t) -> c_int;
/// `int GetMediaData(WeWorkFinanceSdk_t* sdk, const char* indexbuf, const char* sdkFileid,
/// const char* proxy, const char* passwd, int timeout, MediaData_t* media_data);` — indexbuf
/// first, then sdkFileid.
pub type GetMediaDataFn = unsafe extern "C" fn(
    *mut WeWorkFinanceSdk_t,
    *const c_char,
    *const c_char,
    *const c_char,
    *const c_char,
    c_int,
    *mut MediaData_t,
) -> c_int;
/// `void DestroySdk(WeWorkFinanceSdk_t* sdk);`
pub type DestroySdkFn = unsafe extern "C" fn(*mut WeWorkFinanceSdk_t);
/// `Slice_t* NewSlice();`
pub type NewSliceFn = unsafe extern "C" fn() -> *mut Slice_t;
/// `void FreeSlice(Slice_t* slice);`
pub type FreeSliceFn = unsafe extern "C" fn(*mut Slice_t);
/// `char* GetContentFromSlice(Slice_t* slice);`
pub type GetContentFromSliceFn = unsafe extern "C" fn(*mut Slice_t) -> *mut c_char;
/// `int GetSliceLen(Slice_t* slice);`
pub type GetSliceLenFn = unsafe extern "C" fn(*mut Slice_t) -> c_int;
/// `MediaData_t* NewMediaData();`
pub type NewMediaDataFn = unsafe extern "C" fn() -> *mut MediaData_t;
/// `void FreeMediaData(MediaData_t* media_data);`
pub type FreeMediaDataFn = unsafe extern "C" fn(*mut MediaData_t);
/// `char* GetOutIndexBuf(MediaData_t* media_data);`
pub type GetOutIndexBufFn = unsafe extern "C" fn(*mut MediaData_t) -> *mut c_char;
/// `char* GetData(MediaData_t* media_data);`
pub type GetDataFn = unsafe extern "C" fn(*mut MediaData_t) -> *mut c_char;
/// `int GetIndexLen(MediaData_t* media_data);`
pub type GetIndexLenFn = unsafe extern "C" fn(*mut MediaData_t) -> c_int;
/// `int GetDataLen(MediaData_t* media_data);`
pub type GetDataLenFn = unsafe extern "C" fn(*mut MediaData_t) -> c_int;
/// `int IsMediaDataFinish(MediaData_t* media_data);`
pub type IsMediaDataFinishFn = unsafe extern "C" fn(*mut MediaData_t) -> c_int;

/// Why the library could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// `dlopen` failed: no such file, wrong architecture, a missing dependency (OpenSSL)…
    #[error("cannot load the finance library {}: {reason}", path.display())]
    Open {
        /// The path given.
        path: PathBuf,
        /// The loader's message with its causes.
        reason: String,
    },
    /// The library lacks a function of the header: not WeCom's finance library.
    #[error("{} is not the finance library: it has no function {symbol}", path.display())]
    MissingSymbol {
        /// The path given.
        path: PathBuf,
        /// The first missing function.
        symbol: &'static str,
    },
}

/// A non-zero return code of the library (§5.1), or one of the same codes for a failure on our
/// side of the call (10000 for a string with a NUL byte, 10003 for a NULL allocation or an
/// inconsistent result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ret {ret}: {}", meaning(*ret))]
pub struct SdkError {
    /// The return code.
    pub ret: i32,
}

/// The header comment's text for a return code.
fn meaning(ret: i32) -> &'static str {
    match ret {
        0 => "ok",
        10000 => "parameter error",
        10001 => "network error",
        10002 => "data parse failure",
        10003 => "system failure",
        10004 => "encryption failed because of a key error",
        10005 => "bad fileid",
        10006 => "decryption failed",
        10007 => "no private key for this message's encryption version",
        10008 => "cannot parse encrypt_key",
        10009 => "IP not allowed",
        10010 => "data expired",
        10011 => "certificate error",
        _ => "unknown return code",
    }
}

impl SdkError {
    /// Parameter error: also what a string holding a NUL byte gets, without calling.
    pub const PARAMETER: Self = Self { ret: 10000 };
    /// System failure: also a NULL allocation or an inconsistent result.
    pub const SYSTEM: Self = Self { ret: 10003 };

    /// What the return code means, from the header's comment.
    pub fn meaning(&self) -> &'static str {
        meaning(self.ret)
    }

    /// Worth retrying later: network error, data parse failure, system failure.
    pub fn is_transient(&self) -> bool {
        matches!(self.ret, 10001..=10003)
    }
}

/// The library's functions, and the library that keeps them valid.
struct Functions {
    new_sdk: NewSdkFn,
    init: InitFn,
    get_chat_data: GetChatDataFn,
    decrypt_data: DecryptDataFn,
    get_media_data: GetMediaDataFn,
    destroy_sdk: DestroySdkFn,
    new_slice: NewSliceFn,
    free_slice: FreeSliceFn,
    get_content_from_slice: GetContentFromSliceFn,
    get_slice_len: GetSliceLenFn,
    new_media_data: NewMediaDataFn,
    free_media_data: FreeMediaDataFn,
    get_out_index_buf: GetOutIndexBufFn,
    get_data: GetDataFn,
    get_index_len: GetIndexLenFn,
    get_data_len: GetDataLenFn,
    is_media_data_finish: IsMediaDataFinishFn,
    path: PathBuf,
    /// Unloaded only when the last clone (and the last [`Sdk`]) is gone; the pointers above
    /// stay valid until then.
    _library: libloading::Library,
}

/// The loaded library. Cheap to clone (one `Arc`); `Send + Sync`.
#[derive(Clone)]
pub struct FinanceLibrary {
    fns: Arc<Functions>,
}

impl fmt::Debug for FinanceLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FinanceLibrary")
            .field("path", &self.fns.path)
            .finish_non_exhaustive()
    }
}

/// `err` with its causes, as one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A Rust string as a C string; one with a NUL byte is a parameter error (never sent).
fn c_string(s: &str) -> Result<CString, SdkError> {
    CString::new(s).map_err(|_| SdkError::PARAMETER)
}

/// 0 is success; anything else is the error.
fn check(ret: c_int) -> Result<(), SdkError> {
    if ret == 0 {
        Ok(())
    } else {
        Err(SdkError { ret })
    }
}

/// Copies `len` bytes at `buf`. A negative length, or a NULL buffer with a non-zero length, is a
/// system failure.
///
/// # Safety
///
/// When `buf` is not NULL and `len` is positive, `buf` must point to `len` readable bytes that
/// stay unchanged during the call.
unsafe fn copy_out(buf: *const c_char, len: c_int) -> Result<Vec<u8>, SdkError> {
    let len = usize::try_from(len).map_err(|_| SdkError::SYSTEM)?;
    if len == 0 {
        return Ok(Vec::new());
    }
    if buf.is_null() {
        return Err(SdkError::SYSTEM);
    }
    // SAFETY: `buf` is non-NULL and, by this function's contract, points to `len` readable
    // bytes; `len` came from a non-negative `c_int`, so it is far below `isize::MAX`.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
    Ok(bytes.to_vec())
}

/// A `Slice_t` from `NewSlice`, freed with `FreeSlice` when dropped.
struct SliceGuard<'a> {
    fns: &'a Functions,
    ptr: *mut Slice_t,
}

impl<'a> SliceGuard<'a> {
    fn new(fns: &'a Functions) -> Result<Self, SdkError> {
        // SAFETY: `NewSlice` takes no arguments and returns an owned slice or NULL.
        let ptr = unsafe { (fns.new_slice)() };
        if ptr.is_null() {
            return Err(SdkError::SYSTEM);
        }
        Ok(Self { fns, ptr })
    }

    /// The slice's bytes, copied by its length.
    fn contents(&self) -> Result<Vec<u8>, SdkError> {
        // SAFETY: `self.ptr` is a live slice from `NewSlice`, not yet freed.
        let (buf, len) = unsafe {
            (
                (self.fns.get_content_from_slice)(self.ptr),
                (self.fns.get_slice_len)(self.ptr),
            )
        };
        // SAFETY: the library's accessors describe the slice's own buffer, which lives until
        // `FreeSlice` (after this copy).
        unsafe { copy_out(buf, len) }
    }
}

impl Drop for SliceGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` came from `NewSlice` and is freed exactly once, here.
        unsafe { (self.fns.free_slice)(self.ptr) }
    }
}

/// A `MediaData_t` from `NewMediaData`, freed with `FreeMediaData` when dropped.
struct MediaGuard<'a> {
    fns: &'a Functions,
    ptr: *mut MediaData_t,
}

impl Drop for MediaGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` came from `NewMediaData` and is freed exactly once, here.
        unsafe { (self.fns.free_media_data)(self.ptr) }
    }
}

impl FinanceLibrary {
    /// Loads the library at `path` and looks up every function of the header.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        // SAFETY: loading a shared library runs its initialisers. The path is the operator's
        // choice of WeCom's finance library (or our stand-in); running its code is the point.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open {
            path: path.to_owned(),
            reason: error_chain(&e),
        })?;
        macro_rules! symbol {
            ($name:literal, $ty:ty) => {{
                // SAFETY: `$ty` is the function's type exactly as the header declares it; the
                // pointer is kept next to the `Library`, so it is never used after unloading.
                let found = unsafe { library.get::<$ty>(concat!($name, "\0").as_bytes()) };
                match found {
                    Ok(symbol) => *symbol,
                    Err(_) => {
                        return Err(LoadError::MissingSymbol {
                            path: path.to_owned(),
                            symbol: $name,
                        });
                    }
                }
            }};
        }
        let fns = Functions {
            new_sdk: symbol!("NewSdk", NewSdkFn),
            init: symbol!("Init", InitFn),
            get_chat_data: symbol!("GetChatData", GetChatDataFn),
            decrypt_data: symbol!("DecryptData", DecryptDataFn),
            get_media_data: symbol!("GetMediaData", GetMediaDataFn),
            destroy_sdk: symbol!("DestroySdk", DestroySdkFn),
            new_slice: symbol!("NewSlice", NewSliceFn),
            free_slice: symbol!("FreeSlice", FreeSliceFn),
            get_content_from_slice: symbol!("GetContentFromSlice", GetContentFromSliceFn),
            get_slice_len: symbol!("GetSliceLen", GetSliceLenFn),
            new_media_data: symbol!("NewMediaData", NewMediaDataFn),
            free_media_data: symbol!("FreeMediaData", FreeMediaDataFn),
            get_out_index_buf: symbol!("GetOutIndexBuf", GetOutIndexBufFn),
            get_data: symbol!("GetData", GetDataFn),
            get_index_len: symbol!("GetIndexLen", GetIndexLenFn),
            get_data_len: symbol!("GetDataLen", GetDataLenFn),
            is_media_data_finish: symbol!("IsMediaDataFinish", IsMediaDataFinishFn),
            path: path.to_owned(),
            _library: library,
        };
        Ok(Self { fns: Arc::new(fns) })
    }

    /// The path it was loaded from.
    pub fn path(&self) -> &Path {
        &self.fns.path
    }

    /// `NewSdk`: a fresh handle (call [`Sdk::init`] next). NULL is a system failure (10003).
    pub fn new_sdk(&self) -> Result<Sdk, SdkError> {
        // SAFETY: `NewSdk` takes no arguments and returns an owned handle or NULL.
        let handle = unsafe { (self.fns.new_sdk)() };
        if handle.is_null() {
            return Err(SdkError::SYSTEM);
        }
        Ok(Sdk {
            handle,
            library: self.clone(),
        })
    }

    /// `DecryptData`: the message JSON of one record (§5.4), purely local. `encrypt_key` is the
    /// RSA-unwrapped `encrypt_random_key` ([`super::keys::KeyRing::unwrap_key`]),
    /// `encrypt_msg` the record's `encrypt_chat_msg` verbatim. The JSON may hold raw control
    /// bytes; it is returned as the library gave it.
    pub fn decrypt_data(&self, encrypt_key: &str, encrypt_msg: &str) -> Result<Vec<u8>, SdkError> {
        let key = c_string(encrypt_key)?;
        let msg = c_string(encrypt_msg)?;
        let slice = SliceGuard::new(&self.fns)?;
        // SAFETY: both strings are NUL-terminated and outlive the call; `slice.ptr` is a live
        // slice from `NewSlice`.
        let ret = unsafe { (self.fns.decrypt_data)(key.as_ptr(), msg.as_ptr(), slice.ptr) };
        check(ret)?;
        slice.contents()
    }
}

/// One chunk of a media file ([`Sdk::get_media_data`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaChunk {
    /// The chunk's bytes (binary).
    pub data: Vec<u8>,
    /// The index to pass on the next call.
    pub next_index: String,
    /// Whether this was the last chunk.
    pub finished: bool,
}

/// One `NewSdk` handle, destroyed (`DestroySdk`) when dropped. Keeps the library loaded. `Send`
/// (not `Sync`): calls on one handle are serialised by `&mut self`.
pub struct Sdk {
    handle: *mut WeWorkFinanceSdk_t,
    library: FinanceLibrary,
}

// SAFETY: the handle is owned by this value alone and every call through it takes `&mut self`,
// so it is used by one thread at a time; the header ties a handle to no particular thread.
unsafe impl Send for Sdk {}

impl fmt::Debug for Sdk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sdk")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        // SAFETY: `self.handle` came from `NewSdk` and is destroyed exactly once, here.
        unsafe { (self.library.fns.destroy_sdk)(self.handle) }
    }
}

impl Sdk {
    /// `Init` with the corp id and the 会话内容存档 secret.
    pub fn init(&mut self, corp_id: &str, secret: &str) -> Result<(), SdkError> {
        let corp_id = c_string(corp_id)?;
        let secret = c_string(secret)?;
        // SAFETY: the handle is live; both strings are NUL-terminated and outlive the call.
        let ret =
            unsafe { (self.library.fns.init)(self.handle, corp_id.as_ptr(), secret.as_ptr()) };
        check(ret)
    }

    /// `GetChatData`: records with seq strictly greater than `seq`, at most `limit` (≤ 1000), as
    /// the library's JSON ([`super::ChatDataBatch::parse`]). Success here can still carry a
    /// non-zero `errcode` in the JSON. `proxy`/`passwd` may be empty; `timeout_secs` in seconds.
    pub fn get_chat_data(
        &mut self,
        seq: u64,
        limit: u32,
        proxy: &str,
        passwd: &str,
        timeout_secs: i32,
    ) -> Result<Vec<u8>, SdkError> {
        let proxy = c_string(proxy)?;
        let passwd = c_string(passwd)?;
        let fns = &self.library.fns;
        let slice = SliceGuard::new(fns)?;
        // SAFETY: the handle is live; the strings are NUL-terminated and outlive the call;
        // `slice.ptr` is a live slice from `NewSlice`. `u64`, `u32` and `i32` are the header's
        // `unsigned long long`, `unsigned int` and `int` on the library's platforms.
        let ret = unsafe {
            (fns.get_chat_data)(
                self.handle,
                seq,
                limit,
                proxy.as_ptr(),
                passwd.as_ptr(),
                timeout_secs,
                slice.ptr,
            )
        };
        check(ret)?;
        slice.contents()
    }

    /// `GetMediaData`: one chunk of the file `sdkfileid`, from `index` (`""` for the first
    /// chunk, then the previous [`MediaChunk::next_index`]). A fresh `MediaData_t` per call.
    pub fn get_media_data(
        &mut self,
        index: &str,
        sdkfileid: &str,
        proxy: &str,
        passwd: &str,
        timeout_secs: i32,
    ) -> Result<MediaChunk, SdkError> {
        let index = c_string(index)?;
        let sdkfileid = c_string(sdkfileid)?;
        let proxy = c_string(proxy)?;
        let passwd = c_string(passwd)?;
        let fns = &self.library.fns;
        // SAFETY: `NewMediaData` takes no arguments and returns an owned holder or NULL.
        let ptr = unsafe { (fns.new_media_data)() };
        if ptr.is_null() {
            return Err(SdkError::SYSTEM);
        }
        let media = MediaGuard { fns, ptr };
        // SAFETY: the handle is live; the strings are NUL-terminated and outlive the call, in
        // the header's order (indexbuf, then sdkFileid); `media.ptr` is a live holder.
        let ret = unsafe {
            (fns.get_media_data)(
                self.handle,
                index.as_ptr(),
                sdkfileid.as_ptr(),
                proxy.as_ptr(),
                passwd.as_ptr(),
                timeout_secs,
                media.ptr,
            )
        };
        check(ret)?;
        // SAFETY: `media.ptr` is a live holder from `NewMediaData`, not yet freed.
        let (data, data_len, index, index_len, finish) = unsafe {
            (
                (fns.get_data)(media.ptr),
                (fns.get_data_len)(media.ptr),
                (fns.get_out_index_buf)(media.ptr),
                (fns.get_index_len)(media.ptr),
                (fns.is_media_data_finish)(media.ptr),
            )
        };
        // SAFETY: the accessors describe the holder's own buffers, which live until
        // `FreeMediaData` (after these copies).
        let data = unsafe { copy_out(data, data_len) }?;
        // SAFETY: as above.
        let index = unsafe { copy_out(index, index_len) }?;
        let next_index = String::from_utf8(index).map_err(|_| SdkError { ret: 10002 })?;
        Ok(MediaChunk {
            data,
            next_index,
            finished: finish != 0,
        })
    }
}

/// Takes the process's standard output for a private protocol channel, and points standard
/// output at standard error: whatever a vendor library prints afterwards (it may `printf`) lands
/// in the log and cannot corrupt the channel. Call it once, before loading the library, while
/// the process has one thread.
#[cfg(unix)]
pub fn take_stdout_for_protocol() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd as _;
    // SAFETY: `dup` and `dup2` take and return plain descriptor numbers; 1 and 2 are open in
    // every process we start (the supervisor gives the worker piped stdout and inherited
    // stderr). `dup` returns a new descriptor this function alone owns.
    let channel = unsafe { libc::dup(1) };
    if channel < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above; after this, descriptor 1 refers to what descriptor 2 does.
    if unsafe { libc::dup2(2, 1) } < 0 {
        let error = std::io::Error::last_os_error();
        // SAFETY: `channel` is ours and not used elsewhere.
        unsafe { libc::close(channel) };
        return Err(error);
    }
    // SAFETY: `channel` is a fresh, open descriptor owned by nothing else: the `File` owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(channel) })
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
    fn errors_name_their_meaning() {
        let e = SdkError { ret: 10001 };
        assert_eq!(e.to_string(), "ret 10001: network error");
        assert!(e.is_transient());
        assert!(!SdkError { ret: 10005 }.is_transient());
        assert_eq!(SdkError { ret: 42 }.meaning(), "unknown return code");
        assert_eq!(SdkError::PARAMETER.ret, 10000);
    }

    #[test]
    fn copies_are_by_length_and_checked() {
        let bytes = b"a\0b";
        // SAFETY: `bytes` holds 3 readable bytes.
        let copy = unsafe { copy_out(bytes.as_ptr().cast(), 3) }.unwrap();
        assert_eq!(copy, b"a\0b");
        // SAFETY: NULL and negative lengths are refused before any read.
        unsafe {
            assert_eq!(copy_out(std::ptr::null(), 4), Err(SdkError::SYSTEM));
            assert_eq!(copy_out(bytes.as_ptr().cast(), -1), Err(SdkError::SYSTEM));
            assert_eq!(copy_out(std::ptr::null(), 0), Ok(Vec::new()));
        }
    }

    #[test]
    fn nul_in_a_string_is_a_parameter_error() {
        assert_eq!(c_string("a\0b").unwrap_err(), SdkError::PARAMETER);
    }
}
