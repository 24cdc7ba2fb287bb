//! Conversions between `SystemTime`, Unix microseconds (how both services
//! store and compare times) and `google.protobuf.Timestamp`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

/// Microseconds since the Unix epoch, saturating (never panics on a clock
/// before 1970).
pub fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// Now, in Unix microseconds.
pub fn now_micros() -> i64 {
    unix_micros(SystemTime::now())
}

/// A Timestamp from Unix microseconds.
pub fn timestamp_from_micros(us: i64) -> Timestamp {
    Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: (us.rem_euclid(1_000_000) * 1_000) as i32,
    }
}

/// Unix microseconds from a Timestamp; `None` when the nanos are out of
/// range or the value does not fit.
pub fn micros_from_timestamp(ts: &Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    ts.seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(ts.nanos) / 1_000)
}

/// A Timestamp from a `SystemTime`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    timestamp_from_micros(unix_micros(t))
}

/// A `SystemTime` from Unix microseconds.
pub fn system_time_from_micros(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micros_round_trip_including_negative() {
        for us in [
            0,
            1,
            999_999,
            1_000_000,
            1_763_800_000_123_456,
            -1,
            -1_500_000,
        ] {
            let ts = timestamp_from_micros(us);
            assert!((0..1_000_000_000).contains(&ts.nanos));
            assert_eq!(micros_from_timestamp(&ts), Some(us));
        }
    }

    #[test]
    fn bad_timestamps_are_rejected() {
        assert_eq!(
            micros_from_timestamp(&Timestamp {
                seconds: 0,
                nanos: -1
            }),
            None
        );
        assert_eq!(
            micros_from_timestamp(&Timestamp {
                seconds: i64::MAX,
                nanos: 0
            }),
            None
        );
    }
}
