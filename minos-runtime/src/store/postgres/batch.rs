//! Batchers: requests of one kind from concurrent callers wait in a channel; a task takes what is
//! waiting and answers all of it with one statement. Idle, a request goes out at once from its
//! caller's task; busy, the requests that arrived meanwhile share the next statement.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

use super::BACKEND;

/// Most requests in one statement.
const MAX_BATCH: usize = 256;

type Request<Q, A> = (Q, oneshot::Sender<Result<A, StoreError>>);

/// Answers a batch, one answer per request in order, or fails it whole.
type Run<Q, A> =
    Arc<dyn Fn(Vec<Q>) -> BoxFuture<'static, Result<Vec<A>, StoreError>> + Send + Sync>;

/// Requests of one kind, answered a batch at a time by one task; a request while no other is
/// waiting or running goes out at once from its caller's task instead.
pub(super) struct Batcher<Q, A> {
    sender: mpsc::UnboundedSender<Request<Q, A>>,
    run: Run<Q, A>,
    /// Requests being answered, on either path.
    active: Arc<AtomicUsize>,
}

impl<Q, A> Clone for Batcher<Q, A> {
    fn clone(&self) -> Self {
        Batcher {
            sender: self.sender.clone(),
            run: Arc::clone(&self.run),
            active: Arc::clone(&self.active),
        }
    }
}

/// Counts a request as active until dropped.
struct Active(Arc<AtomicUsize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<Q: Send + 'static, A: Send + 'static> Batcher<Q, A> {
    /// Starts the task: `run` answers a batch, one answer per request in order, or fails it whole.
    pub(super) fn spawn<F, Fut>(run: F) -> Self
    where
        F: Fn(Vec<Q>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<A>, StoreError>> + Send + 'static,
    {
        let run: Run<Q, A> = Arc::new(move |batch| Box::pin(run(batch)));
        let (sender, mut receiver) = mpsc::unbounded_channel::<Request<Q, A>>();
        let task_run = Arc::clone(&run);
        tokio::spawn(async move {
            let run = task_run;
            while let Some(first) = receiver.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                let (queries, replies): (Vec<Q>, Vec<_>) = batch.into_iter().unzip();
                match run(queries).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(Ok(answer));
                        }
                    }
                    Err(error) => {
                        let unavailable = matches!(error, StoreError::Unavailable { .. });
                        let text = error.to_string();
                        let mut first = Some(error);
                        for reply in replies {
                            let error = first.take().unwrap_or_else(|| match unavailable {
                                true => StoreError::Unavailable {
                                    backend: BACKEND,
                                    source: text.clone().into(),
                                },
                                false => StoreError::backend(BACKEND, text.clone()),
                            });
                            let _ = reply.send(Err(error));
                        }
                    }
                }
            }
        });
        Batcher {
            sender,
            run,
            active: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Waits for the answer to `query`.
    pub(super) async fn call(&self, query: Q) -> Result<A, StoreError> {
        let alone = self.active.fetch_add(1, Ordering::SeqCst) == 0;
        let _active = Active(Arc::clone(&self.active));
        if alone {
            // Nothing to share a statement with: no hop through the task.
            let mut answers = (self.run)(vec![query]).await?;
            return answers
                .pop()
                .ok_or_else(|| StoreError::backend(BACKEND, "the batch gave no answer"));
        }
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((query, reply))
            .map_err(|_| StoreError::backend(BACKEND, "the batcher stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::backend(BACKEND, "the batcher dropped the request"))?
    }
}
