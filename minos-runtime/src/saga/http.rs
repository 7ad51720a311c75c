//! The status endpoints of a service's saga executions.

use serde_json::Value;
use uuid::Uuid;

use super::{ExecutionStatus, SagaExecution, SagaManager};
use crate::error::Error;

/// `GET /saga/executions/{uuid}`: the execution's uuid, saga, status, context and error.
fn execution_endpoint(request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let uuid: Uuid = request.param("uuid")?;
        let execution = SagaManager::current()?.get(uuid).await?;
        Ok(crate::routing::Response::json(execution.summary()))
    })
}

/// `GET /saga/executions[?status=paused&limit=100]`: executions, newest change first.
fn executions_endpoint(request: crate::routing::Request) -> crate::routing::HandlerFuture {
    Box::pin(async move {
        let status = match request.params().get("status") {
            Some(text) => Some(
                serde_json::from_value::<ExecutionStatus>(Value::String(text.clone())).map_err(
                    |_| {
                        Error::bad_request(format!(
                        "unknown status `{text}`: use created, running, paused, finished or errored"
                    ))
                    },
                )?,
            ),
            None => None,
        };
        let limit = match request.params().get("limit") {
            Some(_) => request.param::<usize>("limit")?,
            None => 100,
        };
        let executions = SagaManager::current()?.list(status, limit).await?;
        let summaries: Vec<Value> = executions.iter().map(SagaExecution::summary).collect();
        Ok(crate::routing::Response::json(summaries))
    })
}

/// The HTTP routes of the saga manager.
pub(crate) fn http_routes() -> [(&'static str, &'static str, crate::routing::HandlerFn); 2] {
    [
        ("GET", "/saga/executions", executions_endpoint),
        ("GET", "/saga/executions/{uuid}", execution_endpoint),
    ]
}
