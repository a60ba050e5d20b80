//! The paired significance test of the experiment: the exact McNemar test.
//!
//! Each held-out task and seed is run before and after evolution; only the pairs whose
//! outcome changed say anything. Under "no effect" a change is as likely one way as the
//! other, so the number of improvements among `n` changed pairs is Binomial(n, 1/2).

/// Two-sided exact McNemar p-value for `improved` pairs (fail → pass) and `worsened`
/// pairs (pass → fail).
pub fn mcnemar_exact(improved: usize, worsened: usize) -> f64 {
    let n = improved + worsened;
    if n == 0 {
        return 1.0;
    }
    let k = improved.min(worsened);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space to stay exact for large n.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0f64;
    let mut tail = 0.0f64;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // 6 improvements, none worse: 2 * 0.5^6.
        assert!((mcnemar_exact(6, 0) - 0.03125).abs() < 1e-12);
        // 5 vs 1: 2 * (1 + 6) / 64.
        assert!((mcnemar_exact(5, 1) - 14.0 / 64.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(3, 3), 1.0);
        assert!(mcnemar_exact(40, 10) < 0.001);
    }
}
