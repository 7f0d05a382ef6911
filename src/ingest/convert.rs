//! Lossless conversion of a typed input column (Parquet) to the table's declared type.
//!
//! The rule, the same as for JSON Lines and CSV values: a value is converted only when the
//! result is exactly the value, never truncated, rounded or reinterpreted. So integers widen
//! (int32 into int64) and narrow only when every value fits; timestamps change unit only when
//! every value is a whole number of milliseconds; integers become float64 only up to 2^53; floats
//! never become integers or timestamps (1.9 would become 1 and the row that should lose would
//! win); numbers never become bools or strings; strings never become numbers or bytes. A refusal
//! names the declared type and the file's type (the caller adds the file and column) and, when
//! one value is at fault, its row.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, TimestampMillisecondArray};
use arrow::compute::{cast_with_options, CastOptions};
use arrow::datatypes::{
    DataType, Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow::util::display::FormatOptions;

/// Largest integer magnitude a float64 holds exactly.
const F64_EXACT: i64 = 1 << 53;

/// Why a column was refused: the message, and the 0-based row within the batch if one value is
/// at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub row: Option<usize>,
    pub message: String,
}

/// Converts `source` to `target` (a type `ColumnType::arrow_type` gives) if that is lossless.
pub fn conform(source: &ArrayRef, target: &DataType) -> Result<ArrayRef, Refusal> {
    let from = source.data_type();
    let refuse = |why: &str| Refusal {
        row: None,
        message: format!(
            "declared {}, but the file has {from}: {why}",
            describe(target)
        ),
    };
    let source = match from {
        // A dictionary is an encoding, not a type: convert its values.
        DataType::Dictionary(_, values) => {
            let plain = cast_with_options(source, values, &checked())
                .map_err(|err| refuse(&err.to_string()))?;
            return conform(&plain, target);
        }
        _ => source,
    };
    match (target, from) {
        (t, f) if t == f => Ok(source.clone()),
        (DataType::Int64 | DataType::Int32, f) if f.is_integer() => {
            // Checked: a value that does not fit is an error, not a wrap.
            cast_with_options(source, target, &checked()).map_err(|err| Refusal {
                row: None,
                message: format!(
                    "declared {}, but the file has {from} values that do not fit: {err}",
                    describe(target)
                ),
            })
        }
        (DataType::Timestamp(TimeUnit::Millisecond, None), DataType::Timestamp(unit, _)) => {
            timestamp_to_millis(source, unit).map_err(|row| Refusal {
                row: Some(row),
                message: format!(
                    "declared {}, but the file has {from} and this value is not a whole number of milliseconds (or does not fit)",
                    describe(target)
                ),
            })
        }
        (DataType::Timestamp(TimeUnit::Millisecond, None), f) if f.is_integer() => {
            // Integers are milliseconds since the epoch, as in JSON Lines and CSV.
            let millis = cast_with_options(source, &DataType::Int64, &checked())
                .map_err(|err| refuse(&err.to_string()))?;
            let values = millis.as_primitive::<Int64Type>();
            Ok(Arc::new(TimestampMillisecondArray::new(
                values.values().clone(),
                values.nulls().cloned(),
            )))
        }
        (DataType::Float64, DataType::Float32 | DataType::Float16) => {
            cast_with_options(source, target, &checked()).map_err(|err| refuse(&err.to_string()))
        }
        (DataType::Float64, f) if f.is_integer() => integers_to_f64(source).map_err(|row| Refusal {
            row: Some(row),
            message: format!(
                "declared {}, but the file has {from} and this value is beyond 2^53, which a float64 cannot hold exactly",
                describe(target)
            ),
        }),
        (DataType::Utf8, DataType::LargeUtf8 | DataType::Utf8View)
        | (DataType::Binary, DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_)) => {
            cast_with_options(source, target, &checked()).map_err(|err| refuse(&err.to_string()))
        }
        _ => Err(refuse(
            "that conversion could lose or reinterpret values; convert the column to the declared type before ingesting",
        )),
    }
}

fn checked() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    }
}

/// Timestamps of `unit` as milliseconds, or the first row that is not a whole number of them.
fn timestamp_to_millis(source: &ArrayRef, unit: &TimeUnit) -> Result<ArrayRef, usize> {
    let (values, nulls): (Vec<i64>, _) = match unit {
        TimeUnit::Second => {
            let a = source.as_primitive::<TimestampSecondType>();
            (a.values().to_vec(), a.nulls().cloned())
        }
        TimeUnit::Millisecond => {
            let a = source.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
            (a.values().to_vec(), a.nulls().cloned())
        }
        TimeUnit::Microsecond => {
            let a = source.as_primitive::<TimestampMicrosecondType>();
            (a.values().to_vec(), a.nulls().cloned())
        }
        TimeUnit::Nanosecond => {
            let a = source.as_primitive::<TimestampNanosecondType>();
            (a.values().to_vec(), a.nulls().cloned())
        }
    };
    let convert = |v: i64| -> Option<i64> {
        match unit {
            TimeUnit::Second => v.checked_mul(1000),
            TimeUnit::Millisecond => Some(v),
            TimeUnit::Microsecond => (v % 1000 == 0).then_some(v / 1000),
            TimeUnit::Nanosecond => (v % 1_000_000 == 0).then_some(v / 1_000_000),
        }
    };
    let mut out = Vec::with_capacity(values.len());
    for (row, value) in values.into_iter().enumerate() {
        let is_null = nulls.as_ref().is_some_and(|n| n.is_null(row));
        match (is_null, convert(value)) {
            (true, _) => out.push(0),
            (false, Some(millis)) => out.push(millis),
            (false, None) => return Err(row),
        }
    }
    Ok(Arc::new(TimestampMillisecondArray::new(out.into(), nulls)))
}

/// Integers as float64, or the first row beyond 2^53 in magnitude.
fn integers_to_f64(source: &ArrayRef) -> Result<ArrayRef, usize> {
    // Every integer type but uint64 fits i64; a uint64 beyond i64 is beyond 2^53 too.
    let wide = match cast_with_options(source, &DataType::Int64, &checked()) {
        Ok(wide) => wide,
        Err(_) => {
            let unsigned = source.as_primitive::<arrow::datatypes::UInt64Type>();
            let row = (0..unsigned.len())
                .find(|&i| unsigned.is_valid(i) && unsigned.value(i) > F64_EXACT as u64)
                .unwrap_or(0);
            return Err(row);
        }
    };
    let values = wide.as_primitive::<Int64Type>();
    if let Some(row) = (0..values.len())
        .find(|&i| values.is_valid(i) && values.value(i).unsigned_abs() > F64_EXACT as u64)
    {
        return Err(row);
    }
    let floats: Float64Array =
        arrow::compute::unary::<Int64Type, _, Float64Type>(values, |v| v as f64);
    Ok(Arc::new(floats))
}

/// The declared type as a person names it.
fn describe(target: &DataType) -> &'static str {
    match target {
        DataType::Int32 => "int32",
        DataType::Int64 => "int64",
        DataType::Float64 => "float64",
        DataType::Boolean => "bool",
        DataType::Utf8 => "string",
        DataType::Binary => "bytes",
        DataType::Timestamp(_, _) => "timestamp (ms)",
        _ => "another type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, Float32Array, Int32Array, Int64Array, StringArray, TimestampNanosecondArray,
        TimestampSecondArray, UInt64Array,
    };

    fn ms() -> DataType {
        DataType::Timestamp(TimeUnit::Millisecond, None)
    }

    #[test]
    fn lossless_conversions_are_taken() {
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(-3)]));
        let wide = conform(&ints, &DataType::Int64).unwrap();
        assert_eq!(wide.as_primitive::<Int64Type>().value(2), -3);
        assert!(wide.is_null(1));
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1_700_000_000]));
        let millis = conform(&seconds, &ms()).unwrap();
        assert_eq!(
            millis
                .as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                .value(0),
            1_700_000_000_000
        );
        let nanos: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![5_000_000]));
        assert!(conform(&nanos, &ms()).is_ok());
        let numbers: ArrayRef = Arc::new(Int64Array::from(vec![1_700_000_000_123]));
        assert!(conform(&numbers, &ms()).is_ok());
        let small: ArrayRef = Arc::new(Int64Array::from(vec![7, 1 << 53]));
        assert!(conform(&small, &DataType::Float64).is_ok());
        let single: ArrayRef = Arc::new(Float32Array::from(vec![1.5]));
        assert!(conform(&single, &DataType::Float64).is_ok());
        let fits: ArrayRef = Arc::new(Int64Array::from(vec![5]));
        assert!(conform(&fits, &DataType::Int32).is_ok());
    }

    #[test]
    fn lossy_conversions_are_refused_with_both_types() {
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![1.9, 1.1]));
        for target in [DataType::Int64, ms(), DataType::Int32] {
            let refusal = conform(&floats, &target).unwrap_err();
            assert!(
                refusal.message.contains("the file has Float64"),
                "{refusal:?}"
            );
        }
        let text: ArrayRef = Arc::new(StringArray::from(vec!["12"]));
        assert!(conform(&text, &DataType::Int64).is_err());
        assert!(conform(&text, &DataType::Binary).is_err());
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![1, 0]));
        assert!(conform(&ints, &DataType::Boolean).is_err());
        assert!(conform(&ints, &DataType::Utf8).is_err());
        let bools: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
        assert!(conform(&bools, &DataType::Int64).is_err());
        let nanos: ArrayRef = Arc::new(TimestampNanosecondArray::from(vec![0, 1_500_000]));
        assert_eq!(conform(&nanos, &ms()).unwrap_err().row, Some(1));
        let big: ArrayRef = Arc::new(Int64Array::from(vec![1, (1 << 53) + 1]));
        assert_eq!(conform(&big, &DataType::Float64).unwrap_err().row, Some(1));
        let huge: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX]));
        assert!(conform(&huge, &DataType::Int64).is_err());
        assert!(conform(&huge, &DataType::Float64).is_err());
        let overflow: ArrayRef = Arc::new(Int64Array::from(vec![i64::MAX]));
        let refusal = conform(&overflow, &DataType::Int32).unwrap_err();
        assert!(refusal.message.contains("do not fit"), "{refusal:?}");
        let seconds: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MAX]));
        assert_eq!(conform(&seconds, &ms()).unwrap_err().row, Some(0));
    }
}
