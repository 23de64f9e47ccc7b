//! Structs read from JSON objects only.
//!
//! serde's derived `Deserialize` for a struct also accepts a JSON array and reads it by
//! position: `"container_settings": [true]` would set the first field, `"prevResult": []`
//! would be an empty result. Every struct read from user input is therefore read through
//! [`Object`]: the config itself (by [`crate::parse_config`]) and, with these helpers in
//! `#[serde(deserialize_with = "...")]`, every field whose type is a struct, so anything but an
//! object is "invalid type: sequence, expected an object" naming the field:
//!
//! | field type | helper | `null` reads as |
//! |---|---|---|
//! | `T` | [`object`] | an error |
//! | `T: Default` | [`nullable_object`] | `T::default()` |
//! | `Option<T>` | [`optional_object`] | `None` |
//! | `Vec<T>` | [`object_list`] | empty |
//! | `Option<Vec<T>>` | [`optional_object_list`] | `None` |
//!
//! Combine with `#[serde(default)]` for an absent field. `serde_json::Value` counts as a
//! struct here (a `prevResult` must be an object).

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// `T`, read only from a JSON object.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// A struct field that must be an object.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::deserialize(d).map(|o| o.0)
}

/// A struct field that must be an object or `null` (the default).
pub fn nullable_object<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<Object<T>>::deserialize(d)?.map(|o| o.0).unwrap_or_default())
}

/// An optional struct field: an object, or `null` for `None`.
pub fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Object<T>>::deserialize(d)?.map(|o| o.0))
}

/// An array of objects; `null` is empty.
pub fn object_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(optional_object_list(d)?.unwrap_or_default())
}

/// An optional array of objects; `null` is `None`.
pub fn optional_object_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Option::<Vec<Object<T>>>::deserialize(d)?;
    Ok(list.map(|l| l.into_iter().map(|o| o.0).collect()))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Inner {
        #[serde(default)]
        on: bool,
    }

    #[derive(Debug, Deserialize)]
    struct Outer {
        #[serde(default, deserialize_with = "super::nullable_object")]
        inner: Inner,
        #[serde(default, deserialize_with = "super::optional_object")]
        maybe: Option<Inner>,
        #[serde(default, deserialize_with = "super::object_list")]
        list: Vec<Inner>,
        #[serde(default, deserialize_with = "super::optional_object")]
        value: Option<serde_json::Value>,
    }

    fn parse(s: &str) -> Result<Outer, String> {
        crate::parse_config::<Outer>(s.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn objects_are_read() {
        let o = parse(r#"{"inner":{"on":true},"maybe":{"on":true},"list":[{"on":true}],"value":{}}"#).unwrap();
        assert!(o.inner.on && o.maybe.unwrap().on && o.list[0].on);
        assert_eq!(o.value, Some(serde_json::json!({})));
        let o = parse(r#"{"inner":null,"maybe":null,"list":null,"value":null}"#).unwrap();
        assert_eq!((o.inner, o.maybe, o.list.len(), o.value), (Inner::default(), None, 0, None));
    }

    #[test]
    fn anything_but_an_object_is_refused_naming_the_field() {
        for (doc, field) in [
            (r#"{"inner":[true]}"#, "inner"),
            (r#"{"maybe":[]}"#, "maybe"),
            (r#"{"maybe":5}"#, "maybe"),
            (r#"{"list":[[true]]}"#, "list[0]"),
            (r#"{"value":[]}"#, "value"),
            (r#"[{}]"#, "(top level)"),
        ] {
            let err = parse(doc).unwrap_err();
            assert!(err.contains(&format!("field {field}:")) && err.contains("expected an object"), "{doc}: {err}");
        }
    }
}
