//! The payment service: `POST /payments` and `CreatePayment` (the order saga's payment step) record a
//! payment. As in the original, nothing is charged. Unlike it, the card number is checked (12 to 19
//! digits, and the Luhn check digit every card number has) and only its last four digits are stored and published: a full card number is not data a
//! service should keep. The answer to the request that carried the number repeats it, as the original's
//! clients expect.

use minos::prelude::*;
use minos_ecommerce::aggregate;
use serde::Deserialize;

/// A payment.
#[root_entity]
pub struct Payment {
    /// The card's last four digits.
    pub credit_number: i64,
    pub amount: f64,
    /// `created`.
    pub status: String,
}

/// The body of `POST /payments` and of `CreatePayment`. The card number may be a JSON number (as the
/// original's clients send it) or a string of digits.
#[schema]
#[derive(Deserialize)]
struct NewPayment {
    credit_number: Value,
    amount: f64,
}

/// The card number's digits, checked.
fn card_digits(number: &Value) -> Result<String> {
    let digits = match number {
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::String(s) => s
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect(),
        _ => return Err(Error::bad_request("`credit_number` must be a card number")),
    };
    if !(12..=19).contains(&digits.len()) || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::bad_request(
            "`credit_number` must have 12 to 19 digits",
        ));
    }
    if !luhn(&digits) {
        return Err(Error::bad_request(
            "`credit_number` is not a valid card number (its check digit is wrong)",
        ));
    }
    Ok(digits)
}

/// The Luhn check every card number passes.
fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            match (i % 2, d * 2) {
                (0, _) => d,
                (_, doubled) if doubled > 9 => doubled - 9,
                (_, doubled) => doubled,
            }
        })
        .sum();
    sum % 10 == 0
}

pub struct PaymentCommandService;

#[command_service]
impl PaymentCommandService {
    /// Records a payment of `amount` with the card; answers the whole payment.
    #[enroute(broker = "CreatePayment", rest = "POST /payments", request = NewPayment)]
    async fn create_payment(&self, request: Request) -> Result<Response> {
        let NewPayment {
            credit_number,
            amount,
        } = request.content()?;
        if !amount.is_finite() || amount <= 0.0 {
            return Err(Error::bad_request("`amount` must be a positive number"));
        }
        let digits = card_digits(&credit_number)?;
        let payment = Payment::create(Payment {
            credit_number: digits[digits.len() - 4..].parse().unwrap_or_default(),
            amount,
            status: "created".into(),
        })
        .await?;
        let mut answer = aggregate(&payment)?;
        answer["credit_number"] = credit_number;
        Ok(Response::json(answer))
    }
}

fn main() -> minos::Result<()> {
    // The defaults (`MINOS_*` variables set the store, the broker, the registry): see run.sh.
    minos::Launcher::from_config(concat!(env!("CARGO_MANIFEST_DIR"), "/config/payment.yml"))?.run()
}
