//! Attribute values of our own call model. Only the exporter turns these into
//! OpenTelemetry types, so the rest of the crate never depends on the opentelemetry crates.

use std::borrow::Cow;

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    Str(String),
    Int(i64),
    /// A measure with a fraction: self times in milliseconds, to the microsecond.
    Double(f64),
    Bool(bool),
    StrList(Vec<String>),
}

/// One span attribute: a name from the span contract in DESIGN.md and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Attr {
    pub key: Cow<'static, str>,
    pub value: AttrValue,
}

impl Attr {
    pub fn str(key: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Str(value.into()),
        }
    }

    pub fn int(key: impl Into<Cow<'static, str>>, value: i64) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Int(value),
        }
    }

    pub fn double(key: impl Into<Cow<'static, str>>, value: f64) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Double(value),
        }
    }

    pub fn bool(key: impl Into<Cow<'static, str>>, value: bool) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::Bool(value),
        }
    }

    pub fn list(key: impl Into<Cow<'static, str>>, value: Vec<String>) -> Attr {
        Attr {
            key: key.into(),
            value: AttrValue::StrList(value),
        }
    }
}

/// The span contract's own attribute names live in one place, `schema::names`; this path is
/// kept for the modules that name them through the call model.
pub use crate::schema::names;
