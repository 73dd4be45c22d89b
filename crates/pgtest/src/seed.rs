//! Seeds for the tests' random schedules: each test prints the seed it runs with, and
//! [`SEED_VAR`] replays it.

/// The environment variable that replays a run: the seed a test printed, as `0x...` hex or
/// decimal.
pub const SEED_VAR: &str = "PGTEST_SEED";

/// The seed of a test's random choices: [`SEED_VAR`] when it is set, else a fresh one. It is
/// printed either way (`seed 0x...`), so that a failure can be run again with the same choices.
///
/// # Panics
///
/// When [`SEED_VAR`] is set but is not a number: a typo must not quietly run another seed.
#[allow(
    clippy::panic,
    reason = "test support: a seed that cannot be read fails the test"
)]
pub fn seed() -> u64 {
    let seed = match std::env::var(SEED_VAR) {
        Ok(text) => match parse(&text) {
            Some(seed) => seed,
            None => panic!("{SEED_VAR}={text:?} is not a seed (0x... hex or decimal)"),
        },
        Err(_) => fastrand::u64(..),
    };
    println!("seed {seed:#x} (rerun with {SEED_VAR}={seed:#x})");
    seed
}

/// A generator seeded with [`seed`].
pub fn seeded_rng() -> fastrand::Rng {
    fastrand::Rng::with_seed(seed())
}

/// `0x`-prefixed hex or decimal.
fn parse(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16).ok(),
        None => text.replace('_', "").parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_seeds_parse_back() {
        assert_eq!(parse("0x1f"), Some(31));
        assert_eq!(parse(&format!("{:#x}", u64::MAX)), Some(u64::MAX));
        assert_eq!(parse(" 42\n"), Some(42));
        assert_eq!(parse("0x9e37_79b9"), Some(0x9e37_79b9));
        assert_eq!(parse("seed"), None);
        assert_eq!(parse("0x"), None);
    }
}
