//! Kubernetes resource quantities ("500m", "2", "1Gi", "1e3") as integers, for the contract's
//! parsed resource fields.

/// The quantity could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid quantity {0:?}")]
pub struct InvalidQuantity(pub String);

/// The quantity in thousandths of a unit, rounded up (CPU "500m" = 500, "2" = 2000).
pub fn to_millis(q: &str) -> Result<i64, InvalidQuantity> {
    scaled(q, 1000.0)
}

/// The quantity in whole units, rounded up (memory "1Gi" = 1073741824).
pub fn to_units(q: &str) -> Result<i64, InvalidQuantity> {
    scaled(q, 1.0)
}

fn scaled(q: &str, factor: f64) -> Result<i64, InvalidQuantity> {
    let err = || InvalidQuantity(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().map_err(|_| err())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err())?;
            10f64.powi(exp)
        }
        _ => return Err(err()),
    };
    let value = (base * multiplier * factor).ceil();
    if !value.is_finite() || value.abs() > i64::MAX as f64 {
        return Err(err());
    }
    // Rounded up above and range-checked, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    Ok(value as i64)
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
