//! Bounded parallel transfers.

use std::future::Future;

use futures::{StreamExt, TryStreamExt};

/// Runs `f` on every item with at most `concurrency` running at once; stops at the first error.
/// Results come back in the order of `items`.
pub async fn parallel<T, R, E, F, Fut>(items: Vec<T>, concurrency: usize, f: F) -> Result<Vec<R>, E>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffered(concurrency.max(1))
        .try_collect()
        .await
}
