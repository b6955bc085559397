//! Chat archive (会话内容存档, `shared/wecom-protocol.md` §5): the pieces that do not need the
//! database.
//!
//! * [`ffi`]: WeCom's closed C library (`libWeWorkFinanceSdk_C.so`) loaded at run time with
//!   `libloading`, every function of the header bound; the only `unsafe` code of the crate.
//! * [`keys`]: the private-key ring by `publickey_ver` and the RSA (PKCS#1 v1.5) step, done by us
//!   with aws-lc-rs rather than by the library.
//! * [`message`]: the decrypted message JSON of §5.4, typed per `msgtype`, unknown types kept.
//! * [`standin`]: the payload scheme of the stand-in library (`wecom-sdk/finance-standin`) and the
//!   emulator; WeCom's own scheme is private to its library.
//! * [`ChatDataBatch`]: what `GetChatData` answers (§5.2).

pub mod ffi;
pub mod keys;
pub mod message;
pub mod standin;

use serde::{Deserialize, Serialize};

/// `GetChatData`'s JSON (§5.2). Even when the call returned 0 this can carry a non-zero
/// `errcode` (301042 IP not allowed, 301052 service expired, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDataBatch {
    /// WeCom's errcode, 0 on success.
    #[serde(default)]
    pub errcode: i64,
    /// WeCom's errmsg.
    #[serde(default)]
    pub errmsg: String,
    /// The records, seq ascending; empty means caught up.
    #[serde(default)]
    pub chatdata: Vec<EncryptedRecord>,
}

/// One record of [`ChatDataBatch::chatdata`], still encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedRecord {
    /// The corp-wide cursor.
    pub seq: u64,
    /// Unique id of the message (dedup key); opaque.
    pub msgid: String,
    /// Version of the corp's public key that wrapped `encrypt_random_key`.
    pub publickey_ver: u32,
    /// base64 of the RSA (PKCS#1 v1.5) encrypted per-message key.
    pub encrypt_random_key: String,
    /// The ciphertext for `DecryptData`, verbatim.
    pub encrypt_chat_msg: String,
}

impl ChatDataBatch {
    /// Parses the library's output. Bytes that are not a batch are an error, never a panic.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
