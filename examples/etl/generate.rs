//! The input generator: a JSONL file of orders with a share of bad rows and of duplicates.
//!
//! What each line is follows from the seed and the line's index alone ([`plan`]), so a test can
//! tell, without reading the file, which lines are bad (and why) and which are duplicates. Most
//! duplicates repeat an order a few lines back (a client retrying: the dedupe window catches them);
//! the rest repeat one [`FAR`] lines back, long out of the window (a replayed export: the
//! database's primary key catches them).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::row::{COUNTRIES, Defect};

/// How far back a near duplicate may look, in lines.
pub(crate) const NEAR: u64 = 32;
/// How far back a far duplicate looks, in lines: well past any dedupe window of up to a few
/// thousand keys, as long as at least a third of the lines are new orders.
pub(crate) const FAR: u64 = 25_000;
/// Customers the orders are spread over (the lookup's directory knows them all).
pub(crate) const CUSTOMERS: u32 = 100_000;
/// The defects the generator puts in bad rows, in turn.
pub(crate) const DEFECTS: [Defect; 7] = [
    Defect::Malformed,
    Defect::Schema,
    Defect::Quantity,
    Defect::Price,
    Defect::Country,
    Defect::Encoding,
    Defect::Customer,
];
/// Of the duplicates, the share that repeats an order far back.
const FAR_SHARE: f64 = 0.2;

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spec {
    /// Lines in the file.
    pub(crate) rows: u64,
    /// Share of bad lines, 0.0-0.3.
    pub(crate) bad_share: f64,
    /// Share of duplicate lines, 0.0-0.3.
    pub(crate) dup_share: f64,
    /// Makes a different file with the same shares.
    pub(crate) seed: u64,
}

impl Spec {
    /// Checks the shares: each in 0.0..=0.3, so that new orders stay the majority and a far
    /// duplicate is always out of the dedupe window.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (name, share) in [
            ("--bad-share", self.bad_share),
            ("--dup-share", self.dup_share),
        ] {
            if !(0.0..=0.3).contains(&share) {
                return Err(format!("{name}: {share} is not between 0.0 and 0.3"));
            }
        }
        Ok(())
    }
}

/// What one line of the generated file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// A new order (id = index + 1).
    Fresh,
    /// A bad row with this defect.
    Bad(Defect),
    /// The same line as line index `of`, a few lines back.
    Near {
        /// The index of the repeated line.
        of: u64,
    },
    /// The same line as line index `of`, [`FAR`] lines back.
    Far {
        /// The index of the repeated line.
        of: u64,
    },
}

/// What was generated, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Generated {
    /// Lines written.
    pub(crate) rows: u64,
    /// Bytes written.
    pub(crate) bytes: u64,
    /// New orders.
    pub(crate) fresh: u64,
    /// Bad rows.
    pub(crate) bad: u64,
    /// Duplicates a few lines back.
    pub(crate) near: u64,
    /// Duplicates [`FAR`] lines back.
    pub(crate) far: u64,
}

/// splitmix64 of `x`: a well-mixed hash.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `salt`-th random number of line `index`.
fn draw(spec: &Spec, index: u64, salt: u64) -> u64 {
    mix(mix(spec.seed ^ salt.wrapping_mul(0xA24B_AED4_963E_E407)) ^ index)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The kind of line `index` before duplicates are matched to their originals.
#[derive(PartialEq)]
enum Kind {
    Fresh,
    Bad,
    Duplicate,
}

fn kind(spec: &Spec, index: u64) -> Kind {
    let u = unit(draw(spec, index, 1));
    if u < spec.bad_share {
        Kind::Bad
    } else if u < spec.bad_share + spec.dup_share {
        Kind::Duplicate
    } else {
        Kind::Fresh
    }
}

/// What line `index` (0-based) of the file made from `spec` is.
///
/// A duplicate repeats a new order only. A near one looks up to [`NEAR`] lines back for one (if
/// none, the line is a new order itself); a far one repeats exactly line `index - FAR` (if that
/// is not a new order, the line is a new order itself), so no two far duplicates repeat the same
/// line.
pub(crate) fn plan(spec: &Spec, index: u64) -> Plan {
    match kind(spec, index) {
        Kind::Fresh => Plan::Fresh,
        Kind::Bad => Plan::Bad(DEFECTS[(draw(spec, index, 2) % DEFECTS.len() as u64) as usize]),
        Kind::Duplicate => {
            if unit(draw(spec, index, 3)) < FAR_SHARE {
                return match index.checked_sub(FAR) {
                    Some(of) if kind(spec, of) == Kind::Fresh => Plan::Far { of },
                    _ => Plan::Fresh,
                };
            }
            let start = 1 + draw(spec, index, 4) % NEAR;
            (start..=NEAR)
                .filter_map(|back| index.checked_sub(back))
                .find(|&of| kind(spec, of) == Kind::Fresh)
                .map_or(Plan::Fresh, |of| Plan::Near { of })
        }
    }
}

/// Appends line `index`'s bytes (without the newline) to `out`.
pub(crate) fn render(spec: &Spec, index: u64, out: &mut Vec<u8>) {
    match plan(spec, index) {
        Plan::Fresh => order(spec, index, None, out),
        Plan::Near { of } | Plan::Far { of } => order(spec, of, None, out),
        Plan::Bad(defect) => order(spec, index, Some(defect), out),
    }
}

/// The order of line `index`, spoiled by `defect` if given.
fn order(spec: &Spec, index: u64, defect: Option<Defect>, out: &mut Vec<u8>) {
    let r = draw(spec, index, 5);
    let id = index + 1;
    let customer = (r % u64::from(CUSTOMERS)) as u32;
    let sku = (r >> 20) % 20_000;
    let mut quantity = 1 + (r >> 36) % 20;
    let mut price = 99 + ((r >> 41) % 50_000) as i64;
    let mut country = COUNTRIES[((r >> 58) % COUNTRIES.len() as u64) as usize].0;
    let ts = 1_700_000_000 + index as i64;
    match defect {
        Some(Defect::Quantity) => quantity = 0,
        Some(Defect::Price) => price = -(1 + (r % 1000) as i64),
        Some(Defect::Country) => country = "XX",
        _ => {}
    }
    let start = out.len();
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b",\"customer\":\"");
    match defect {
        Some(Defect::Encoding) => out.extend_from_slice(b"C\xff\xfe"),
        Some(Defect::Customer) => out.extend_from_slice(b"customer-7"),
        _ => out.extend_from_slice(format!("C{customer:07}").as_bytes()),
    }
    out.extend_from_slice(b"\"");
    if defect != Some(Defect::Schema) {
        out.extend_from_slice(format!(",\"sku\":\"SKU-{sku:05}\"").as_bytes());
    }
    out.extend_from_slice(
        format!(
            ",\"quantity\":{quantity},\"unit_cents\":{price},\"country\":\"{country}\",\"ts\":{ts}}}"
        )
        .as_bytes(),
    );
    if defect == Some(Defect::Malformed) {
        // Cut mid-object: the JSON ends too early.
        out.truncate(start + (out.len() - start) / 2);
    }
}

/// Writes the file for `spec` to `path` (replacing it).
pub(crate) fn write(spec: &Spec, path: &Path) -> io::Result<Generated> {
    let mut file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut generated = Generated::default();
    let mut line = Vec::with_capacity(256);
    for index in 0..spec.rows {
        line.clear();
        render(spec, index, &mut line);
        line.push(b'\n');
        file.write_all(&line)?;
        generated.bytes += line.len() as u64;
        match plan(spec, index) {
            Plan::Fresh => generated.fresh += 1,
            Plan::Bad(_) => generated.bad += 1,
            Plan::Near { .. } => generated.near += 1,
            Plan::Far { .. } => generated.far += 1,
        }
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    generated.rows = spec.rows;
    Ok(generated)
}
