//! Kubernetes resource quantities ("500m", "2", "1Gi", "1e3") as integers, for the contract's
//! parsed resource fields.

/// The quantity could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid quantity {0:?}")]
pub struct InvalidQuantity(pub String);

/// The quantity in thousandths of a unit, rounded up (CPU "500m" = 500, "2" = 2000).
pub fn to_millis(q: &str) -> Result<i64, InvalidQuantity> {
    scaled(q, 3)
}

/// The quantity in whole units, rounded up (memory "1Gi" = 1073741824).
pub fn to_units(q: &str) -> Result<i64, InvalidQuantity> {
    scaled(q, 0)
}

/// `q` times `10^shift`, rounded up. Exact integer arithmetic: floating point turned "9m" into 10
/// millis and lost digits past 2^53. A quantity outside `i64`, or with more significant digits
/// than `u128` holds (the API server's canonical form has at most 19), is refused.
fn scaled(q: &str, shift: i64) -> Result<i64, InvalidQuantity> {
    let err = || InvalidQuantity(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    // value = number × 10^exp10 × 1024^binary
    let (exp10, binary): (i64, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 1),
        "Mi" => (0, 2),
        "Gi" => (0, 3),
        "Ti" => (0, 4),
        "Pi" => (0, 5),
        "Ei" => (0, 6),
        e if e.starts_with(['e', 'E']) => (e[1..].parse::<i32>().map_err(|_| err())?.into(), 0),
        _ => return Err(err()),
    };
    let (negative, mantissa, frac_digits) = decimal(num).ok_or_else(err)?;
    let n = mantissa.checked_mul(1024u128.pow(binary)).ok_or_else(err)?;
    let exp = exp10 + shift - frac_digits;
    // |value| = n × 10^exp; its ceiling's magnitude, rounded toward +∞ for either sign.
    let magnitude = if n == 0 {
        0
    } else if exp >= 0 {
        u32::try_from(exp)
            .ok()
            .and_then(|e| 10u128.checked_pow(e))
            .and_then(|p| n.checked_mul(p))
            .ok_or_else(err)?
    } else {
        match u32::try_from(-exp).ok().and_then(|e| 10u128.checked_pow(e)) {
            Some(d) => n / d + u128::from(!negative && n % d != 0),
            // 10^-exp exceeds u128, so 0 < |value| < 1.
            None => u128::from(!negative),
        }
    };
    if negative {
        // -2^63 is the one magnitude only a negative value has.
        0i64.checked_sub_unsigned(u64::try_from(magnitude).map_err(|_| err())?)
            .ok_or_else(err)
    } else {
        i64::try_from(magnitude).map_err(|_| err())
    }
}

/// `[+-]digits[.digits]` (either side may be empty, not both) as sign, the digits as one integer
/// (trailing fraction zeros dropped) and the number of fraction digits kept.
fn decimal(num: &str) -> Option<(bool, u128, i64)> {
    let (negative, digits) = match num.as_bytes().first() {
        Some(b'-') => (true, &num[1..]),
        Some(b'+') => (false, &num[1..]),
        _ => (false, num),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && digits.len() <= 1) || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let mut mantissa: u128 = 0;
    for b in int.bytes().chain(frac.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(u128::from(b - b'0'))?;
    }
    Some((negative, mantissa, i64::try_from(frac.len()).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (q, millis) in [
            ("500m", 500),
            ("2", 2000),
            ("0.25", 250),
            ("1k", 1_000_000),
            ("100u", 1),
            ("1e3", 1_000_000),
        ] {
            assert_eq!(to_millis(q), Ok(millis), "{q}");
        }
        for (q, units) in [
            ("1Gi", 1 << 30),
            ("128Mi", 128 << 20),
            ("1G", 1_000_000_000),
            ("1.5Ki", 1536),
            ("100", 100),
            ("4Ti", 1 << 42),
        ] {
            assert_eq!(to_units(q), Ok(units), "{q}");
        }
        for bad in ["", "abc", "1Q", "1e", "--1"] {
            assert!(to_units(bad).is_err(), "{bad}");
        }
    }
}

/// Arbitrary strings never panic or wrap; valid quantities convert exactly.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    /// Strings shaped like quantities, most of them valid.
    fn quantityish() -> impl Strategy<Value = String> {
        "[ +-]?[0-9]{0,25}(\\.[0-9]{0,25})?([numkMGTPE]|[KMGTPE]i|[eE][+-]?[0-9]{0,11}|[a-zA-Z]{0,3})? ?"
    }

    /// `a × 10^e` as an exact integer when it fits, for checking conversions.
    fn times_pow10(a: i128, e: u32) -> Option<i64> {
        a.checked_mul(10i128.checked_pow(e)?)
            .and_then(|v| i64::try_from(v).ok())
    }

    proptest! {
        #![proptest_config(crate::fuzzing::config())]

        #[test]
        fn fuzz_quantity_arbitrary_strings(q in prop_oneof![any::<String>(), quantityish()]) {
            let (millis, units) = (to_millis(&q), to_units(&q));
            // Same syntax on both scales; only magnitude tells them apart.
            match (&millis, &units) {
                (Ok(_), Err(_)) => prop_assert!(false, "{q:?}: millis without units"),
                (Err(_), Ok(u)) => prop_assert!(u.unsigned_abs() >= (i64::MAX / 1000 - 1).unsigned_abs(), "{q:?}"),
                _ => {}
            }
            if let (Ok(m), Ok(u)) = (millis, units) {
                // Rounded up on both scales: u - 1 < m / 1000 ≤ u.
                prop_assert!(i128::from(m) <= i128::from(u) * 1000, "{q:?}: {m} vs {u}");
                prop_assert!(i128::from(m) > (i128::from(u) - 1) * 1000, "{q:?}: {m} vs {u}");
            }
        }

        #[test]
        fn fuzz_quantity_integers_round_trip(n in any::<i64>(), plus in any::<bool>()) {
            let sign = if plus && n >= 0 { "+" } else { "" };
            prop_assert_eq!(to_units(&format!("{sign}{n}")), Ok(n));
            prop_assert_eq!(to_millis(&format!("{sign}{n}m")), Ok(n));
            prop_assert_eq!(to_units(&format!("{n}000m")), Ok(n));
            prop_assert_eq!(to_millis(&format!("{n}u")), Ok(n.div_euclid(1000) + i64::from(n.rem_euclid(1000) != 0)));
            let want = times_pow10(n.into(), 3);
            prop_assert_eq!(to_millis(&format!("{n}")).ok(), want);
            prop_assert_eq!(to_units(&format!("{n}k")).ok(), want);
            prop_assert_eq!(to_units(&format!("{n}e3")).ok(), want);
            prop_assert_eq!(to_units(&format!("{n}Ki")).ok(), n.checked_mul(1024));
            prop_assert_eq!(to_units(&format!("{n}Ei")).ok(), n.checked_mul(1 << 60));
            prop_assert_eq!(to_units(&format!("{n}E")).ok(), times_pow10(n.into(), 18));
        }

        #[test]
        fn fuzz_quantity_decimals_round_up(
            int in 0u64..1_000_000_000_000,
            frac in "[0-9]{1,12}",
            suffix in prop_oneof![Just(("", 0u32)), Just(("k", 3)), Just(("M", 6)), Just(("G", 9))],
        ) {
            let q = format!("{int}.{frac}{}", suffix.0);
            // value × scale, exactly; rounded up after dividing by scale.
            let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(0));
            let scaled = (u128::from(int) * scale + frac.parse::<u128>().unwrap_or(0))
                * 10u128.pow(suffix.1);
            prop_assert_eq!(to_units(&q).ok(), i64::try_from(scaled.div_ceil(scale)).ok(), "{}", q);
            prop_assert_eq!(to_millis(&q).ok(), i64::try_from((scaled * 1000).div_ceil(scale)).ok(), "{}", q);
        }
    }

    #[test]
    fn millis_were_rounded_up_past_the_value() {
        // Found by fuzz_quantity_integers_round_trip: with f64, 9 × 0.001 × 1000 > 9.
        assert_eq!(to_millis("9m"), Ok(9));
        assert_eq!(to_millis("13m"), Ok(13));
        assert_eq!(to_millis("0.009"), Ok(9));
    }

    #[test]
    fn large_values_are_exact_or_refused() {
        // Past 2^53 f64 lost the last digit; 2^63 saturated to i64::MAX instead of failing.
        assert_eq!(to_units("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(to_units("9223372036854775807"), Ok(i64::MAX));
        assert!(to_units("9223372036854775808").is_err());
        assert!(to_units("8Ei").is_err());
        assert_eq!(to_units("-8Ei"), Ok(i64::MIN));
        assert!(to_millis("1e999999999").is_err());
        assert_eq!(to_millis("0e999999999"), Ok(0));
        assert_eq!(to_millis("1e-999999999"), Ok(1));
    }
}
