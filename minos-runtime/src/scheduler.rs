//! Periodic handlers: cron schedules, and `@reboot` once at start.

use std::sync::Arc;

use chrono::Utc;
use cron::Schedule;
use tokio::task::JoinHandle;

use crate::routing::{invoke, Context, Middleware, Origin, Request, RouteTable};

/// Parses a cron expression: 5 fields (minute precision, like crontab), or 6–7 fields starting with
/// seconds. `@reboot` is not a schedule: it runs once at start.
pub(crate) fn parse_schedule(expression: &str) -> Result<Schedule, String> {
    minos_rules::cron_schedule(expression)
        .map_err(|e| format!("invalid cron expression `{expression}`: {e}"))
}

/// The running periodic handlers.
#[derive(Debug, Default)]
pub(crate) struct SchedulerHandle {
    tasks: Vec<JoinHandle<()>>,
}

impl SchedulerHandle {
    /// Stops every schedule (a handler running now is cut at its next await).
    pub(crate) fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Starts `table`'s periodic handlers.
pub(crate) fn spawn(
    table: &RouteTable,
    chain: Arc<[Middleware]>,
    context: Context,
) -> Result<SchedulerHandle, String> {
    let mut tasks = Vec::new();
    for (expression, entry) in table.periodic_routes() {
        let handler = entry.handler;
        let chain = Arc::clone(&chain);
        let context = context.clone();
        let location = entry.location();
        let name = format!("{}::{}", entry.service, entry.function);
        // Each run is a trace of its own, in a span naming the service, the handler and the schedule.
        let run = move |chain: Arc<[Middleware]>, context: Context, request: Request| {
            let span = tracing::info_span!(
                "periodic",
                service = %context.name(),
                handler = %name,
                schedule = expression,
                trace_id = tracing::field::Empty,
            );
            async move {
                let run = invoke(&chain, handler, request, &context);
                crate::telemetry::trace::run_in(span, None, run).await
            }
        };
        let request = move || {
            Request::from_parts(
                serde_json::Value::Null,
                Default::default(),
                Default::default(),
                Origin::Periodic {
                    schedule: expression.to_owned(),
                    at: Utc::now(),
                },
            )
        };
        if expression == minos_rules::REBOOT {
            tasks.push(tokio::spawn(async move {
                if let Err(error) = run(chain, context, request()).await {
                    tracing::error!(%error, handler = %location, "@reboot handler failed");
                }
            }));
            continue;
        }
        let schedule = parse_schedule(expression)?;
        tasks.push(tokio::spawn(async move {
            for next in schedule.upcoming_owned(Utc) {
                let wait = (next - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                if let Err(error) = run(Arc::clone(&chain), context.clone(), request()).await {
                    tracing::error!(%error, handler = %location, "periodic handler failed");
                }
            }
        }));
    }
    Ok(SchedulerHandle { tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_field_expressions_parse() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("0 */5 * * * *").is_ok());
        assert!(parse_schedule("every minute").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
    }
}
