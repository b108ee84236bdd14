//! Lists of inclusive ranges such as "0-2047,4000": bucket ownership and CPU sets.

/// A parsed, non-empty list of inclusive ranges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRanges(Vec<(u32, u32)>);

/// Ranges wider than this in total are refused (no allocation bombs).
const MAX_TOTAL: u64 = 1 << 20;

impl BucketRanges {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        let mut total = 0u64;
        for part in s.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("{s:?}: empty item in the list"));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (num(a.trim(), s)?, num(b.trim(), s)?),
                None => {
                    let n = num(part, s)?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(format!("{s:?}: range {lo}-{hi} is backwards"));
            }
            total += u64::from(hi - lo) + 1;
            if total > MAX_TOTAL {
                return Err(format!("{s:?}: more than {MAX_TOTAL} items"));
            }
            out.push((lo, hi));
        }
        Ok(BucketRanges(out))
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().flat_map(|&(lo, hi)| lo..=hi)
    }
}

fn num(s: &str, whole: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("{whole:?}: {s:?} is not a number"))
}
