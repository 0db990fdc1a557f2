//! Svix-style cursor pagination: `limit` (default 50, at most 250), `iterator`, `order`,
//! answered with `{data, iterator, prevIterator, done}`.

use hookline_store::{ListQuery, Order, Page};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, FieldError};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 250;

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    Ascending,
    Descending,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Items per page, 1 to 250 (default 50).
    #[param(schema_with = crate::openapi::limit)]
    pub limit: Option<u32>,
    /// `iterator` (or `prevIterator`) of a previous page.
    #[param(schema_with = crate::openapi::iterator)]
    pub iterator: Option<String>,
    /// Sort order of ids.
    pub order: Option<Ordering>,
}

impl ListParams {
    pub fn to_query(&self, default_order: Order) -> Result<ListQuery, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::Validation(vec![FieldError::query(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )]));
        }
        if let Some(it) = &self.iterator {
            if it.is_empty() || it.len() > 300 {
                return Err(ApiError::Validation(vec![FieldError::query(
                    "iterator",
                    "must be an iterator returned by a previous page",
                )]));
            }
        }
        Ok(ListQuery {
            limit: limit as usize,
            iterator: self.iterator.clone(),
            order: match self.order {
                None => default_order,
                Some(Ordering::Ascending) => Order::Ascending,
                Some(Ordering::Descending) => Order::Descending,
            },
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListResponse<T> {
    pub data: Vec<T>,
    pub iterator: Option<String>,
    pub prev_iterator: Option<String>,
    pub done: bool,
}

impl<T> ListResponse<T> {
    pub fn from_page<S>(page: Page<S>, f: impl FnMut(S) -> T) -> Self {
        let page = page.map(f);
        Self {
            data: page.data,
            iterator: page.iterator,
            prev_iterator: page.prev_iterator,
            done: page.done,
        }
    }
}
