use serde::Deserialize;

pub mod document_render;
pub mod file_digest;
pub mod noop;
pub mod sleep;

/// Deserializes an integer that JSON may spell `5` or `5.0` (both are the integer 5 to JSON
/// Schema, and generated clients send either).
pub(crate) fn integral<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    use serde::de::Error;
    let n = serde_json::Number::deserialize(de)?;
    let out_of_range = || D::Error::custom(format!("{n} is out of range"));
    if let Some(u) = n.as_u64() {
        return T::try_from(u).map_err(|_| out_of_range());
    }
    if let Some(i) = n.as_i64() {
        return T::try_from(i).map_err(|_| out_of_range());
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => T::try_from(f as i64).map_err(|_| out_of_range()),
        _ => Err(D::Error::custom(format!("{n} is not an integer"))),
    }
}

/// [`integral`] for optional fields (`null` and absent are `None`).
pub(crate) fn integral_opt<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64> + TryFrom<u64>,
{
    #[derive(Deserialize)]
    struct Wrap<T: TryFrom<i64> + TryFrom<u64>>(#[serde(deserialize_with = "integral")] T);
    Ok(Option::<Wrap<T>>::deserialize(de)?.map(|w| w.0))
}
