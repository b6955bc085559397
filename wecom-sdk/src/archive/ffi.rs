//! TEMPORARY stub of the loader's API (replaced by the real loader).
#![allow(missing_docs, clippy::missing_errors_doc)]
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("{path} lacks {symbol}")]
    MissingSymbol { path: String, symbol: String },
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ret {ret}")]
pub struct SdkError {
    pub ret: i32,
}
impl SdkError {
    pub fn meaning(&self) -> &'static str {
        "?"
    }
    pub fn is_transient(&self) -> bool {
        false
    }
}
#[derive(Debug, Clone)]
pub struct FinanceLibrary;
impl FinanceLibrary {
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        Err(LoadError::Open { path: path.display().to_string(), reason: "stub".into() })
    }
    pub fn new_sdk(&self) -> Result<Sdk, SdkError> {
        Err(SdkError { ret: 10003 })
    }
    pub fn decrypt_data(&self, _k: &str, _m: &str) -> Result<Vec<u8>, SdkError> {
        Err(SdkError { ret: 10003 })
    }
}
#[derive(Debug)]
pub struct Sdk;
pub struct MediaChunk {
    pub data: Vec<u8>,
    pub next_index: String,
    pub finished: bool,
}
impl Sdk {
    pub fn init(&mut self, _c: &str, _s: &str) -> Result<(), SdkError> {
        Err(SdkError { ret: 10003 })
    }
    pub fn get_chat_data(&mut self, _seq: u64, _l: u32, _p: &str, _pw: &str, _t: i32) -> Result<Vec<u8>, SdkError> {
        Err(SdkError { ret: 10003 })
    }
    pub fn get_media_data(&mut self, _i: &str, _f: &str, _p: &str, _pw: &str, _t: i32) -> Result<MediaChunk, SdkError> {
        Err(SdkError { ret: 10003 })
    }
}
