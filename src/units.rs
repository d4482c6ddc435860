//! Sizes and rates as people type them: one parser and one convention for every flag
//! (`create --piece-length`, `fetch --max-down-rate`, `sim --up`, ...) and every scenario
//! file key, so `2M` means the same bytes everywhere.
//!
//! The convention (docs/guide.md, "Sizes and rates"):
//!
//! - a bare number is bytes: `262144`; `B` may follow (`262144B`);
//! - `K`, `M`, `G`, `T` are binary (powers of 1024), and so are `KiB`, `MiB`, `GiB`, `TiB`
//!   (and `Ki`, `Mi`, ...): `256K` = `256KiB` = 262,144;
//! - `kB`, `MB`, `GB`, `TB` are decimal (powers of 1000): `1.5MB` = 1,500,000;
//! - the prefix letter may be either case (`256k`, `1m`); `b` reads as `B` (there are no
//!   bit units, so `kb` is a kB, not a kilobit);
//! - a fraction is allowed (`1.5GiB`) and rounds to the nearest byte; space between number
//!   and unit is allowed (`16 MiB`);
//! - a rate is a size per second, optionally written with `/s` (`2MiB/s`); a rate of 0 is an
//!   error (it would never finish).
//!
//! Signs, exponents, `NaN`/`inf` and values beyond `u64` are errors.

use std::fmt;

/// Why a size or rate did not parse; its `Display` names the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitError {
    input: String,
    why: &'static str,
}

impl fmt::Display for UnitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {:?}: {} (e.g. 262144, 256K, 16MiB, 1.5MB; K/M/G binary, kB/MB/GB decimal)",
            self.input, self.why
        )
    }
}

impl std::error::Error for UnitError {}

/// A size in bytes: `262144`, `256K`, `256KiB`, `16MiB`, `1.5GB`, `4096B`.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    bytes(s, s.trim())
}

/// A rate in bytes per second: a non-zero size, optionally followed by `/s`
/// (`2M`, `500K`, `2MiB/s`, `1.5MB/s`, `1000000`).
pub fn parse_rate(s: &str) -> Result<u64, UnitError> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    match bytes(s, t)? {
        0 => Err(err(s, "a rate must be more than 0 bytes/s")),
        v => Ok(v),
    }
}

fn err(input: &str, why: &'static str) -> UnitError {
    UnitError {
        input: input.to_string(),
        why,
    }
}

/// `t` (trimmed, without `/s`) as bytes; `input` is what the user typed, for the error.
fn bytes(input: &str, t: &str) -> Result<u64, UnitError> {
    if t.starts_with(['-', '+']) {
        return Err(err(input, "a size has no sign"));
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = multiplier(unit.trim_start()).ok_or_else(|| err(input, "unknown unit"))?;
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(err(input, "not a number"));
    }
    let too_large = || err(input, "too large");
    // Exact in integers: whole part times the unit, plus the fraction's share of the unit
    // rounded to the nearest byte (no float rounding for large byte counts).
    let mut whole: u128 = 0;
    for d in int.bytes() {
        whole = whole
            .checked_mul(10)
            .and_then(|w| w.checked_add(u128::from(d - b'0')))
            .filter(|&w| w <= u128::from(u64::MAX))
            .ok_or_else(too_large)?;
    }
    // Digits beyond 18 cannot change the result by a whole byte for any unit up to TiB.
    let frac = &frac[..frac.len().min(18)];
    let (mut num, mut den): (u128, u128) = (0, 1);
    for d in frac.bytes() {
        num = num * 10 + u128::from(d - b'0');
        den *= 10;
    }
    let m = u128::from(mult);
    let v = whole * m + (num * m + den / 2) / den;
    u64::try_from(v).map_err(|_| too_large())
}

/// The multiplier of a unit suffix (see the module doc), `None` if it is not one.
fn multiplier(unit: &str) -> Option<u64> {
    let mut chars = unit.chars();
    let Some(first) = chars.next() else {
        return Some(1);
    };
    let exp = match first.to_ascii_lowercase() {
        'b' if chars.as_str().is_empty() => return Some(1),
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        _ => return None,
    };
    match chars.as_str() {
        "" | "i" | "iB" | "ib" => Some(1024u64.pow(exp)),
        "B" | "b" => Some(1000u64.pow(exp)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_rate, parse_size};
    use proptest::prelude::*;

    #[test]
    fn binary_and_decimal_units() {
        for (s, v) in [
            ("0", 0),
            ("4096", 4096),
            ("4096B", 4096),
            ("4096 b", 4096),
            ("256K", 262_144),
            ("256k", 262_144),
            ("256KiB", 262_144),
            ("256kib", 262_144),
            ("256Ki", 262_144),
            ("256kB", 256_000),
            ("256KB", 256_000),
            ("256kb", 256_000),
            ("2M", 2_097_152),
            ("4M", 4 << 20),
            ("2MiB", 2_097_152),
            ("2MB", 2_000_000),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("1GB", 1_000_000_000),
            ("1T", 1 << 40),
            ("1TB", 1_000_000_000_000),
            ("16 MiB", 16 << 20),
            (" 16MiB ", 16 << 20),
            ("1.5GiB", 3 << 29),
            ("1.5k", 1536),
            ("1.5MB", 1_500_000),
            (".5K", 512),
            ("5.", 5),
            ("1.5", 2),
            ("0.0001K", 0),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(s), Ok(v), "{s:?}");
        }
    }

    /// Every size and rate the docs (guide, simulation, benchmarks, README) write, with the
    /// bytes they stand for.
    #[test]
    fn documented_examples() {
        for (s, v) in [
            ("262144", 262_144),
            ("256K", 262_144),
            ("1M", 1 << 20),
            ("16MiB", 16 << 20),
            ("256KiB", 256 << 10),
            ("64KiB", 64 << 10),
            ("32KiB", 32 << 10),
            ("4MiB", 4 << 20),
            ("64K", 64 << 10),
            ("32K", 32 << 10),
            ("1.5MB", 1_500_000),
            ("1.5GiB", 1_610_612_736),
            ("512k", 524_288),
            ("10MB", 10_000_000),
        ] {
            assert_eq!(parse_size(s), Ok(v), "{s:?}");
        }
        for (s, v) in [
            ("2MiB", 2 << 20),
            ("500K", 500 << 10),
            ("1MiB", 1 << 20),
            ("10MiB", 10 << 20),
            ("2M", 2 << 20),
            ("1M", 1 << 20),
            ("512K", 512 << 10),
            ("2MiB/s", 2 << 20),
            ("64KiB/s", 64 << 10),
            ("1000000", 1_000_000),
            ("1.5MB/s", 1_500_000),
        ] {
            assert_eq!(parse_rate(s), Ok(v), "{s:?}");
        }
    }

    #[test]
    fn junk_is_an_error() {
        for s in [
            "",
            " ",
            "fast",
            "12 parsecs",
            "2XB",
            "2Mx",
            "2MiBs",
            "2 M B",
            "K",
            ".",
            "..5",
            "1.2.3",
            "-1",
            "-1K",
            "+5",
            "NaN",
            "nan",
            "inf",
            "1e6",
            "1e300",
            "0x10",
            "18446744073709551616",
            "99999999999999999M",
            "16777216T",
            "99999999999999999999999999999999999999999",
            "5/s",
        ] {
            assert!(parse_size(s).is_err(), "size {s:?}");
        }
        for s in [
            "0", "0K", "0.0001K", "fast", "-2M", "2M/h", "/s", "2M /s /s",
        ] {
            assert!(parse_rate(s).is_err(), "rate {s:?}");
        }
        let e = parse_rate("fast").unwrap_err().to_string();
        assert!(e.contains("\"fast\"") && e.contains("K/M/G binary"), "{e}");
    }

    const UNITS: [(&str, u64); 13] = [
        ("", 1),
        ("B", 1),
        ("K", 1 << 10),
        ("KiB", 1 << 10),
        ("kB", 1000),
        ("M", 1 << 20),
        ("MiB", 1 << 20),
        ("MB", 1_000_000),
        ("G", 1 << 30),
        ("GiB", 1 << 30),
        ("GB", 1_000_000_000),
        ("T", 1 << 40),
        ("TB", 1_000_000_000_000),
    ];

    proptest! {
        #[test]
        fn whole_numbers_times_the_unit(n in 0u32.., u in 0usize..UNITS.len()) {
            let (unit, mult) = UNITS[u];
            let v = u128::from(n) * u128::from(mult);
            let parsed = parse_size(&format!("{n}{unit}"));
            match u64::try_from(v) {
                Ok(v) => prop_assert_eq!(parsed, Ok(v)),
                Err(_) => prop_assert!(parsed.is_err()),
            }
            let rate = parse_rate(&format!("{n}{unit}/s"));
            if n > 0 {
                prop_assert_eq!(rate.ok(), parse_size(&format!("{n}{unit}")).ok());
            } else {
                prop_assert!(rate.is_err());
            }
        }

        #[test]
        fn fractions_round_to_the_nearest_byte(n in 0u32..1_000_000, f in 0u32..1000, u in 0usize..UNITS.len()) {
            let (unit, mult) = UNITS[u];
            let exact = (u128::from(n) * 1000 + u128::from(f)) * u128::from(mult);
            let want = (exact + 500) / 1000;
            prop_assert_eq!(parse_size(&format!("{n}.{f:03}{unit}")), Ok(want as u64));
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_size(&s);
            let _ = parse_rate(&s);
        }
    }
}
