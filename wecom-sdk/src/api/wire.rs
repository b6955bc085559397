//! Lenient serde helpers for WeCom's JSON: empty strings where an id is absent, numbers where
//! the docs say strings, and booleans sent as `0`/`1`.

use std::fmt;

use super::error::ApiError;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serializer};

/// `Option<T>` from a string where `""` or an absent/`null` value means `None`; anything else
/// must convert (`T` is usually a typed id).
pub(crate) fn empty_as_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<String>,
    T::Error: fmt::Display,
{
    match Option::<String>::deserialize(deserializer)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => T::try_from(s).map(Some).map_err(de::Error::custom),
    }
}

/// A string, also accepting a number (WeCom's `gender` is a string in `user/get` and a number
/// elsewhere) or `null`.
pub(crate) fn string_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Text(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match Option::<Loose>::deserialize(deserializer)? {
        None => String::new(),
        Some(Loose::Text(s)) => s,
        Some(Loose::Int(n)) => n.to_string(),
        Some(Loose::Float(n)) => n.to_string(),
        Some(Loose::Bool(b)) => u8::from(b).to_string(),
    })
}

/// A boolean that WeCom may send as `true`/`false` or `1`/`0`.
pub(crate) fn bool_or_int<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Bool(bool),
        Int(i64),
    }
    Ok(match Option::<Loose>::deserialize(deserializer)? {
        None => false,
        Some(Loose::Bool(b)) => b,
        Some(Loose::Int(n)) => n != 0,
    })
}

/// A `bool` written as WeCom's `0`/`1`.
pub(crate) fn as_flag<S: Serializer>(value: &bool, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u8(u8::from(*value))
}

/// Joins ids with `|`, as `message/send` wants its receivers.
pub(crate) fn pipe_join<T: fmt::Display>(items: &[T]) -> String {
    let mut joined = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            joined.push('|');
        }
        joined.push_str(&item.to_string());
    }
    joined
}

/// A response with nothing in it but `errcode`/`errmsg`.
#[derive(Deserialize)]
pub(crate) struct Empty {}

/// Refuses a request before sending it.
pub(crate) fn invalid(api: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid {
        api,
        message: message.into(),
    }
}

/// Refuses a text longer than `max` characters.
pub(crate) fn check_chars(
    api: &'static str,
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<(), ApiError> {
    match value {
        Some(v) if v.chars().count() > max => Err(invalid(
            api,
            format!("{field} is longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}
