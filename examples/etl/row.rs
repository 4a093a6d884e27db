//! One row of the ETL: the input's JSON order, how it is checked (every refusal named with a
//! reason), the dead letter a bad row becomes, and the enriched row that is written out.
//!
//! Input, one JSON object a line:
//!
//! ```text
//! {"id":17,"customer":"C0004821","sku":"SKU-00042","quantity":3,"unit_cents":1999,"country":"DE","ts":1700000017}
//! ```

use std::borrow::Cow;
use std::fmt;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

/// The longest line read as a row; a longer one is a dead letter ([`Defect::TooLong`]) and only
/// its first [`RAW_KEPT`] bytes are kept, so memory does not depend on the input.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// How much of an over-long line its dead letter keeps.
pub(crate) const RAW_KEPT: usize = 1024;
/// Quantities accepted.
pub(crate) const QUANTITY: std::ops::RangeInclusive<i64> = 1..=1_000;
/// Unit prices accepted, in cents.
pub(crate) const UNIT_CENTS: std::ops::RangeInclusive<i64> = 1..=10_000_000;
/// The countries orders may come from (ISO 3166 codes), with the region each belongs to.
pub(crate) const COUNTRIES: [(&str, Region); 12] = [
    ("DE", Region::Europe),
    ("FR", Region::Europe),
    ("GB", Region::Europe),
    ("IT", Region::Europe),
    ("ES", Region::Europe),
    ("PL", Region::Europe),
    ("US", Region::Americas),
    ("CA", Region::Americas),
    ("BR", Region::Americas),
    ("JP", Region::Asia),
    ("IN", Region::Asia),
    ("AU", Region::Asia),
];

/// A sales region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Region {
    /// EU and the rest of Europe.
    Europe,
    /// North and South America.
    Americas,
    /// Asia and Oceania.
    Asia,
}

impl Region {
    /// The region's name in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Region::Europe => "europe",
            Region::Americas => "americas",
            Region::Asia => "asia",
        }
    }
}

/// One line of input, as read: its 1-based number and its bytes without the line end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// 1-based line number in the input file.
    pub(crate) number: u64,
    /// The bytes, without `\n` (and `\r`); at most [`MAX_LINE`].
    pub(crate) bytes: Vec<u8>,
    /// The line's full length when it was longer than [`MAX_LINE`] (then `bytes` holds its
    /// first [`RAW_KEPT`] bytes).
    pub(crate) too_long: Option<u64>,
}

/// A valid order. Small and `Copy`: codes are kept as numbers and formatted on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Order {
    /// The order id: the deduplication key and the table's primary key.
    pub(crate) id: u64,
    /// The customer number (`C0004821` is 4821).
    pub(crate) customer: u32,
    /// The SKU number (`SKU-00042` is 42).
    pub(crate) sku: u32,
    /// Items ordered, in [`QUANTITY`].
    pub(crate) quantity: u32,
    /// Price of one item in cents, in [`UNIT_CENTS`].
    pub(crate) unit_cents: u64,
    /// Index into [`COUNTRIES`].
    pub(crate) country: u8,
    /// When the order was placed, Unix seconds.
    pub(crate) ts: i64,
}

/// Why a row was refused. The reason written to the dead-letter file starts with
/// [`Defect::as_str`] and a colon, then the detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Defect {
    /// The line is empty.
    Empty,
    /// The line is longer than [`MAX_LINE`].
    TooLong,
    /// The line is not UTF-8.
    Encoding,
    /// The line is not JSON (syntax error, truncated).
    Malformed,
    /// JSON, but not an order: a field missing or of the wrong type.
    Schema,
    /// `id` is 0.
    Id,
    /// `customer` is not `C` followed by digits.
    Customer,
    /// `sku` is not `SKU-` followed by digits.
    Sku,
    /// `quantity` is outside [`QUANTITY`].
    Quantity,
    /// `unit_cents` is outside [`UNIT_CENTS`].
    Price,
    /// `country` is not in [`COUNTRIES`].
    Country,
}

impl Defect {
    /// Every defect, in the order the summary lists them.
    pub(crate) const ALL: [Defect; 11] = [
        Defect::Empty,
        Defect::TooLong,
        Defect::Encoding,
        Defect::Malformed,
        Defect::Schema,
        Defect::Id,
        Defect::Customer,
        Defect::Sku,
        Defect::Quantity,
        Defect::Price,
        Defect::Country,
    ];

    /// The reason's first word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Defect::Empty => "empty",
            Defect::TooLong => "too_long",
            Defect::Encoding => "encoding",
            Defect::Malformed => "malformed",
            Defect::Schema => "schema",
            Defect::Id => "id",
            Defect::Customer => "customer",
            Defect::Sku => "sku",
            Defect::Quantity => "quantity",
            Defect::Price => "price",
            Defect::Country => "country",
        }
    }

    /// Position in [`Defect::ALL`].
    pub(crate) fn index(self) -> usize {
        Defect::ALL
            .iter()
            .position(|d| *d == self)
            .expect("every defect is listed")
    }
}

/// A refused row: where it was, why, and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// 1-based line number in the input.
    pub(crate) line: u64,
    /// The kind of refusal.
    pub(crate) defect: Defect,
    /// What exactly was wrong.
    pub(crate) detail: String,
    /// The line as read (invalid UTF-8 replaced by U+FFFD; an over-long line cut).
    pub(crate) raw: String,
}

impl Serialize for DeadLetter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("DeadLetter", 3)?;
        s.serialize_field("line", &self.line)?;
        s.serialize_field(
            "reason",
            &Shown(format_args!("{}: {}", self.defect.as_str(), self.detail)),
        )?;
        s.serialize_field("raw", &self.raw)?;
        s.end()
    }
}

/// A line after checking: an order, or a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Checked {
    /// The row is a valid order.
    Valid(Order),
    /// The row was refused.
    Invalid(DeadLetter),
}

impl Checked {
    /// The order, if valid.
    pub(crate) fn valid(self) -> Option<Order> {
        match self {
            Checked::Valid(order) => Some(order),
            Checked::Invalid(_) => None,
        }
    }

    /// The dead letter, if refused.
    pub(crate) fn invalid(self) -> Option<DeadLetter> {
        match self {
            Checked::Valid(_) => None,
            Checked::Invalid(letter) => Some(letter),
        }
    }
}

/// The order's fields as they appear in the input (strings borrowed from the line unless they
/// hold escapes). Fields the ETL does not know are ignored.
#[derive(Deserialize)]
struct RawOrder<'a> {
    id: u64,
    #[serde(borrow)]
    customer: Cow<'a, str>,
    #[serde(borrow)]
    sku: Cow<'a, str>,
    quantity: i64,
    unit_cents: i64,
    #[serde(borrow)]
    country: Cow<'a, str>,
    ts: i64,
}

/// Parses and validates one line. Never panics: anything that is not a valid order becomes a
/// dead letter naming the first problem found.
pub(crate) fn check(line: Line) -> Checked {
    let refuse = |defect: Defect, detail: String, bytes: &[u8]| {
        Checked::Invalid(DeadLetter {
            line: line.number,
            defect,
            detail,
            raw: String::from_utf8_lossy(bytes).into_owned(),
        })
    };
    if let Some(length) = line.too_long {
        return refuse(
            Defect::TooLong,
            format!("{length} bytes, the limit is {MAX_LINE}"),
            &line.bytes,
        );
    }
    if line.bytes.iter().all(u8::is_ascii_whitespace) {
        return refuse(Defect::Empty, "blank line".to_owned(), &line.bytes);
    }
    let text = match std::str::from_utf8(&line.bytes) {
        Ok(text) => text,
        Err(error) => {
            return refuse(
                Defect::Encoding,
                format!("not UTF-8 at byte {}", error.valid_up_to()),
                &line.bytes,
            );
        }
    };
    let raw: RawOrder<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            let defect = match error.classify() {
                serde_json::error::Category::Data => Defect::Schema,
                _ => Defect::Malformed,
            };
            return refuse(defect, error.to_string(), &line.bytes);
        }
    };
    match validate(&raw) {
        Ok(order) => Checked::Valid(order),
        Err((defect, detail)) => refuse(defect, detail, &line.bytes),
    }
}

fn validate(raw: &RawOrder<'_>) -> Result<Order, (Defect, String)> {
    if raw.id == 0 {
        return Err((Defect::Id, "0 is not an order id".to_owned()));
    }
    let customer = code_number(&raw.customer, "C").ok_or_else(|| {
        (
            Defect::Customer,
            format!("`{}` is not C followed by up to 9 digits", raw.customer),
        )
    })?;
    let sku = code_number(&raw.sku, "SKU-").ok_or_else(|| {
        (
            Defect::Sku,
            format!("`{}` is not SKU- followed by up to 9 digits", raw.sku),
        )
    })?;
    if !QUANTITY.contains(&raw.quantity) {
        return Err((
            Defect::Quantity,
            format!(
                "{} is not in {}..={}",
                raw.quantity,
                QUANTITY.start(),
                QUANTITY.end()
            ),
        ));
    }
    if !UNIT_CENTS.contains(&raw.unit_cents) {
        return Err((
            Defect::Price,
            format!(
                "unit_cents {} is not in {}..={}",
                raw.unit_cents,
                UNIT_CENTS.start(),
                UNIT_CENTS.end()
            ),
        ));
    }
    let country = COUNTRIES
        .iter()
        .position(|(code, _)| *code == raw.country)
        .ok_or_else(|| {
            (
                Defect::Country,
                format!("`{}` is not a country orders come from", raw.country),
            )
        })?;
    Ok(Order {
        id: raw.id,
        customer,
        sku,
        // In range: checked above.
        quantity: raw.quantity as u32,
        unit_cents: raw.unit_cents as u64,
        country: country as u8,
        ts: raw.ts,
    })
}

/// `prefix` followed by 1 to 9 ASCII digits, as a number.
fn code_number(text: &str, prefix: &str) -> Option<u32> {
    let digits = text.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the customer lookup adds to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Customer {
    /// The loyalty tier.
    pub(crate) tier: Tier,
    /// The discount the tier gives, in percent.
    pub(crate) discount_pct: u8,
}

/// A customer's loyalty tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// No programme.
    Basic,
    /// Some discount.
    Silver,
    /// The most discount.
    Gold,
    /// The directory does not know the customer.
    Unknown,
}

impl Tier {
    /// The tier's name in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tier::Basic => "basic",
            Tier::Silver => "silver",
            Tier::Gold => "gold",
            Tier::Unknown => "unknown",
        }
    }
}

/// An order with what the lookup added: the row written to SQLite and to the JSONL output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Enriched {
    /// The order as read.
    pub(crate) order: Order,
    /// The customer's tier ([`Tier::Unknown`] when the directory has no record).
    pub(crate) tier: Tier,
    /// quantity x unit price, less the tier's discount, in cents.
    pub(crate) total_cents: u64,
}

impl Enriched {
    /// `order` with `customer`'s record (`None`: unknown customer, no discount).
    pub(crate) fn new(order: Order, customer: Option<Customer>) -> Self {
        let (tier, discount) = customer.map_or((Tier::Unknown, 0), |c| (c.tier, c.discount_pct));
        let gross = u64::from(order.quantity) * order.unit_cents;
        Self {
            order,
            tier,
            total_cents: gross - gross * u64::from(discount) / 100,
        }
    }

    /// The order's country code.
    pub(crate) fn country(&self) -> &'static str {
        COUNTRIES[usize::from(self.order.country)].0
    }

    /// The order's region.
    pub(crate) fn region(&self) -> Region {
        COUNTRIES[usize::from(self.order.country)].1
    }

    /// The customer code as in the input (`C0004821`).
    pub(crate) fn customer_code(&self) -> String {
        format!("C{:07}", self.order.customer)
    }

    /// The SKU code as in the input (`SKU-00042`).
    pub(crate) fn sku_code(&self) -> String {
        format!("SKU-{:05}", self.order.sku)
    }
}

impl Serialize for Enriched {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let order = &self.order;
        let mut s = serializer.serialize_struct("Enriched", 10)?;
        s.serialize_field("id", &order.id)?;
        s.serialize_field("customer", &Shown(format_args!("C{:07}", order.customer)))?;
        s.serialize_field("tier", self.tier.name())?;
        s.serialize_field("sku", &Shown(format_args!("SKU-{:05}", order.sku)))?;
        s.serialize_field("quantity", &order.quantity)?;
        s.serialize_field("unit_cents", &order.unit_cents)?;
        s.serialize_field("total_cents", &self.total_cents)?;
        s.serialize_field("country", self.country())?;
        s.serialize_field("region", self.region().name())?;
        s.serialize_field("ts", &order.ts)?;
        s.end()
    }
}

/// Serialises as a JSON string formatted on the fly (no `String` allocated).
struct Shown<'a>(fmt::Arguments<'a>);

impl Serialize for Shown<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}
