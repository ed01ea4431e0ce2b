//! The streaming reader: walks `traceEvents` one event at a time with a serde visitor, borrowing
//! strings from the input, so a trace of any size costs its bytes plus the analysis state and
//! never a DOM.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A pid, tid, flow id or correlation: Kineto writes numbers, older traces also strings
/// (`"stream 7"`, `"25738"`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Id<'a> {
    Int(i64),
    Text(Cow<'a, str>),
}

impl Id<'_> {
    /// The number in the id: `7` for `7`, `"7"` and `"stream 7"`.
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            Id::Int(v) => Some(*v),
            Id::Text(t) => {
                let digits = t.trim().rsplit(' ').next().unwrap_or("");
                digits.parse().ok()
            }
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Id<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for IdVisitor<'a> {
            type Value = Id<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer or a string id")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Id::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Id::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Id::Int(v as i64))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Id::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Id::Text(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_any(IdVisitor(std::marker::PhantomData))
    }
}

/// A string borrowed from the input when it has no escapes. (`Option<Cow<str>>` through
/// serde's own impl always copies; event names are most of a trace's bytes.)
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for TextVisitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(TextVisitor(std::marker::PhantomData))
    }
}

/// A time in microseconds: a float in current traces, an integer in 2021 ones, now and then a
/// string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Micros {
    /// Kept exact: 2021 traces hold epoch microseconds (~1.6e15), where an f64 of the
    /// nanoseconds would be off by up to 128 ns.
    Int(i64),
    Float(f64),
}

impl Micros {
    /// Nanoseconds, rounded: Kineto prints three decimals of microseconds.
    pub(crate) fn ns(self) -> i64 {
        match self {
            Micros::Int(v) => v.saturating_mul(1000),
            Micros::Float(v) => (v * 1000.0).round() as i64,
        }
    }
}

impl<'de> Deserialize<'de> for Micros {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MicrosVisitor;
        impl Visitor<'_> for MicrosVisitor {
            type Value = Micros;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of microseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Micros::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Micros::Int(i64::try_from(v).unwrap_or(i64::MAX / 1000)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Micros::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.trim()
                    .parse()
                    .map(Micros::Float)
                    .map_err(|_| E::custom(format!("{v:?} is not a number of microseconds")))
            }
        }
        deserializer.deserialize_any(MicrosVisitor)
    }
}

/// The `args` keys the analysis reads; every other key is skipped without allocating.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Args<'a> {
    #[serde(default, borrow)]
    pub correlation: Option<Id<'a>>,
    #[serde(default, borrow, rename = "External id")]
    pub external_id: Option<Id<'a>>,
    /// The 2021 format's spelling.
    #[serde(default, borrow, rename = "external id")]
    pub external_id_legacy: Option<Id<'a>>,
    #[serde(default, borrow)]
    pub stream: Option<Id<'a>>,
    #[serde(default, borrow)]
    pub device: Option<Id<'a>>,
}

impl Args<'_> {
    pub(crate) fn external(&self) -> Option<i64> {
        self.external_id.as_ref().or(self.external_id_legacy.as_ref()).and_then(Id::as_i64)
    }
}

/// One element of `traceEvents`, with strings borrowed from the input where JSON allows.
#[derive(Debug, Deserialize)]
pub(crate) struct Event<'a> {
    #[serde(default, borrow)]
    pub ph: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub cat: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub name: Option<Text<'a>>,
    #[serde(default, borrow)]
    pub pid: Option<Id<'a>>,
    #[serde(default, borrow)]
    pub tid: Option<Id<'a>>,
    #[serde(default)]
    pub ts: Option<Micros>,
    #[serde(default)]
    pub dur: Option<Micros>,
    #[serde(default, borrow)]
    pub id: Option<Id<'a>>,
    #[serde(default, borrow)]
    pub args: Option<Args<'a>>,
}

/// `distributedInfo`: which rank of how many wrote the trace.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
pub struct DistributedInfo {
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub rank: Option<i64>,
    #[serde(default)]
    pub world_size: Option<i64>,
}

/// The top-level keys other than `traceEvents`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Header {
    pub schema_version: Option<String>,
    pub base_time_ns: Option<i64>,
    pub trace_name: Option<String>,
    pub device_count: Option<usize>,
    pub distributed: Option<DistributedInfo>,
    /// A `roctracer_version` or `hip_runtime_version` key: the trace comes from ROCm.
    pub rocm: bool,
}

/// Parses `bytes` (uncompressed trace JSON: an object with `traceEvents`, or a bare array of
/// events) and hands each event to `on_event` in file order.
pub(crate) fn for_each_event<'a, F>(bytes: &'a [u8], on_event: F) -> Result<Header, serde_json::Error>
where
    F: FnMut(Event<'a>),
{
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let header = TopLevel { on_event }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(header)
}

struct TopLevel<F> {
    on_event: F,
}

impl<'de, F: FnMut(Event<'de>)> DeserializeSeed<'de> for TopLevel<F> {
    type Value = Header;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Header, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, F: FnMut(Event<'de>)> Visitor<'de> for TopLevel<F> {
    type Value = Header;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Chrome trace: an object with `traceEvents`, or an array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, seq: A) -> Result<Header, A::Error> {
        EventsSeed { on_event: &mut self.on_event }.visit_seq(seq)?;
        Ok(Header::default())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Header, A::Error> {
        let mut header = Header::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "traceEvents" => map.next_value_seed(EventsSeed { on_event: &mut self.on_event })?,
                "schemaVersion" => {
                    header.schema_version = map.next_value::<Option<Id<'de>>>()?.map(|id| match id {
                        Id::Int(v) => v.to_string(),
                        Id::Text(t) => t.into_owned(),
                    })
                }
                "baseTimeNanoseconds" => {
                    header.base_time_ns = map.next_value::<Option<Id<'de>>>()?.and_then(|id| id.as_i64())
                }
                "traceName" => header.trace_name = map.next_value::<Option<String>>()?,
                "deviceProperties" => {
                    header.device_count = map.next_value::<Option<Vec<IgnoredAny>>>()?.map(|devices| devices.len())
                }
                "distributedInfo" => header.distributed = map.next_value::<Option<DistributedInfo>>()?,
                "roctracer_version" | "hip_runtime_version" | "hip_driver_version" => {
                    header.rocm = true;
                    map.next_value::<IgnoredAny>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(header)
    }
}

struct EventsSeed<'f, F> {
    on_event: &'f mut F,
}

impl<'de, F: FnMut(Event<'de>)> DeserializeSeed<'de> for EventsSeed<'_, F> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, F: FnMut(Event<'de>)> Visitor<'de> for EventsSeed<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of trace events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(event) = seq.next_element::<Event<'de>>()? {
            (self.on_event)(event);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_layouts_and_string_ids() {
        let text = br#"{"schemaVersion":1,"traceEvents":[
            {"ph":"X","cat":"Kernel","name":"k\"q","pid":0,"tid":"stream 7","ts":1623142623531625,"dur":2,"args":{"stream":7,"correlation":34441,"external id":544}},
            {"ph":"X","cat":"kernel","name":"k2","pid":0,"tid":7,"ts":12.5,"dur":"3.25"}
        ],"baseTimeNanoseconds":1700000000000000000}"#;
        let mut events = Vec::new();
        let header = for_each_event(text, |e| {
            events.push((
                e.name.map(|n| n.0.into_owned()),
                e.tid.and_then(|t| t.as_i64()),
                e.dur.map(|d| d.ns()),
                e.args.and_then(|a| a.external()),
            ))
        })
        .unwrap();
        assert_eq!(header.schema_version.as_deref(), Some("1"));
        assert_eq!(header.base_time_ns, Some(1_700_000_000_000_000_000));
        assert_eq!(events[0], (Some("k\"q".to_string()), Some(7), Some(2000), Some(544)));
        assert_eq!(events[1], (Some("k2".to_string()), Some(7), Some(3250), None));
        let mut count = 0;
        for_each_event(br#"[{"ph":"X"},{"ph":"M"}]"#, |_| count += 1).unwrap();
        assert_eq!(count, 2);
        assert!(for_each_event(br#"{"traceEvents":[{"ph":"X"},"#, |_| {}).is_err());
    }
}
