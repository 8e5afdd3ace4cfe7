//! A consumer group's retry policy (`groupRetryPolicy`), in the JSON Apache's `updateSubGroup -p`
//! takes and its `SubscriptionGroupConfig` stores:
//! `{"type":"CUSTOMIZED","customizedRetryPolicy":{"next":[1000,5000]}}` or
//! `{"type":"EXPONENTIAL","exponentialRetryPolicy":{"initial":1000,"max":60000,"multiplier":2}}`.
//! The proxy hands it to consumers as the Settings backoff policy; push consumers wait that long
//! before a failed message is delivered again.

use serde_json::Value;

/// Apache's `CustomizedRetryPolicy` default schedule: 1s 5s 10s 30s 1m … 10m 20m 30m 1h 2h.
pub const DEFAULT_NEXT_MS: [i64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

#[derive(Debug, Clone, PartialEq)]
pub enum RetryPolicy {
    /// Delay before attempt n+1 is `next[n-1]` (the last entry repeats).
    Customized { next_ms: Vec<i64> },
    /// `min(initial * multiplier^(n-1), max)`.
    Exponential {
        initial_ms: i64,
        max_ms: i64,
        multiplier: f64,
    },
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::Customized {
            next_ms: DEFAULT_NEXT_MS.to_vec(),
        }
    }
}

impl RetryPolicy {
    /// Parses the stored JSON; empty means the default. Errors name what is wrong.
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let v: Value =
            serde_json::from_str(json).map_err(|e| format!("groupRetryPolicy is not JSON: {e}"))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("CUSTOMIZED");
        match kind {
            "CUSTOMIZED" => {
                let next = v
                    .get("customizedRetryPolicy")
                    .and_then(|c| c.get("next"))
                    .filter(|n| !n.is_null());
                let next_ms = match next {
                    None => DEFAULT_NEXT_MS.to_vec(),
                    Some(n) => n
                        .as_array()
                        .ok_or("customizedRetryPolicy.next must be an array of milliseconds")?
                        .iter()
                        .map(|x| {
                            x.as_i64().filter(|ms| *ms >= 0).ok_or_else(|| {
                                format!("customizedRetryPolicy.next holds {x}, not milliseconds")
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                };
                if next_ms.is_empty() {
                    return Err("customizedRetryPolicy.next is empty".into());
                }
                Ok(Self::Customized { next_ms })
            }
            "EXPONENTIAL" => {
                let e = v.get("exponentialRetryPolicy").filter(|e| !e.is_null());
                let num = |k: &str, d: i64| -> Result<i64, String> {
                    match e.and_then(|e| e.get(k)) {
                        None => Ok(d),
                        Some(x) => x
                            .as_i64()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| format!("exponentialRetryPolicy.{k} must be > 0 ms")),
                    }
                };
                let initial_ms = num("initial", 5_000)?;
                let max_ms = num("max", 7_200_000)?;
                let multiplier = match e.and_then(|e| e.get("multiplier")) {
                    None => 2.0,
                    Some(x) => x
                        .as_f64()
                        .filter(|m| *m >= 1.0)
                        .ok_or("exponentialRetryPolicy.multiplier must be ≥ 1")?,
                };
                Ok(Self::Exponential {
                    initial_ms,
                    max_ms: max_ms.max(initial_ms),
                    multiplier,
                })
            }
            other => Err(format!(
                "groupRetryPolicy type {other} is neither CUSTOMIZED nor EXPONENTIAL"
            )),
        }
    }

    /// How long to wait after failed attempt `attempt` (1-based).
    pub fn delay_ms(&self, attempt: i32) -> i64 {
        let n = attempt.max(1) as usize;
        match self {
            Self::Customized { next_ms } => next_ms[(n - 1).min(next_ms.len() - 1)],
            Self::Exponential {
                initial_ms,
                max_ms,
                multiplier,
            } => {
                let d = *initial_ms as f64 * multiplier.powi((n - 1).min(64) as i32);
                (d.min(*max_ms as f64)) as i64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apache_json() {
        assert_eq!(RetryPolicy::parse("").unwrap(), RetryPolicy::default());
        let c = RetryPolicy::parse(
            r#"{"type":"CUSTOMIZED","exponentialRetryPolicy":null,"customizedRetryPolicy":{"next":[1000,2000]}}"#,
        )
        .unwrap();
        assert_eq!(
            (c.delay_ms(1), c.delay_ms(2), c.delay_ms(9)),
            (1000, 2000, 2000)
        );
        let e = RetryPolicy::parse(
            r#"{"type":"EXPONENTIAL","exponentialRetryPolicy":{"initial":1000,"max":5000,"multiplier":3}}"#,
        )
        .unwrap();
        assert_eq!(
            (e.delay_ms(1), e.delay_ms(2), e.delay_ms(3)),
            (1000, 3000, 5000)
        );
        assert_eq!(RetryPolicy::default().delay_ms(3), 10_000);
        assert!(RetryPolicy::parse("{").is_err());
        assert!(RetryPolicy::parse(r#"{"type":"LINEAR"}"#).is_err());
        assert!(RetryPolicy::parse(r#"{"customizedRetryPolicy":{"next":[]}}"#).is_err());
        assert!(RetryPolicy::parse(r#"{"customizedRetryPolicy":{"next":["1s"]}}"#).is_err());
    }
}
