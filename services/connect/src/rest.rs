//! The REST API, in Kafka Connect's shape: the same paths, bodies, status
//! codes and error bodies (`{"error_code": 404, "message": ...}`), so
//! scripts and tools written for Kafka Connect work against a Runnel worker.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::configdef::{self, Props};
use crate::plugins;
use crate::store::{RestartRequest, Store, TargetState};
use crate::worker::task_configs;

/// What the handlers share.
#[derive(Clone)]
pub struct RestState {
    /// The internal topics.
    pub store: Arc<Store>,
    /// The cluster id, for `GET /`.
    pub cluster_id: String,
}

/// An error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error_code": self.0.as_u16(), "message": self.1})),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn not_found(name: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("Connector {name} not found"))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot write to the connect cluster: {e}"),
    )
}

/// The API's routes.
pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/connectors", get(list).post(create))
        .route("/connectors/{name}", get(info).delete(delete))
        .route("/connectors/{name}/config", get(config).put(put_config))
        .route("/connectors/{name}/status", get(status))
        .route("/connectors/{name}/tasks", get(tasks))
        .route("/connectors/{name}/tasks/{task}/status", get(task_status))
        .route(
            "/connectors/{name}/tasks/{task}/restart",
            post(restart_task),
        )
        .route("/connectors/{name}/pause", put(pause))
        .route("/connectors/{name}/resume", put(resume))
        .route("/connectors/{name}/stop", put(stop))
        .route("/connectors/{name}/restart", post(restart))
        .route("/connector-plugins", get(plugin_list))
        .route("/connector-plugins/{plugin}/config/validate", put(validate))
        .with_state(state)
}

async fn root(State(s): State<RestState>) -> Json<Value> {
    Json(
        json!({"version": env!("CARGO_PKG_VERSION"), "commit": "", "kafka_cluster_id": s.cluster_id}),
    )
}

async fn list(State(s): State<RestState>, Query(q): Query<Vec<(String, String)>>) -> Json<Value> {
    let configs = s.store.current();
    let expands: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "expand")
        .map(|(_, v)| v)
        .collect();
    if expands.is_empty() {
        return Json(json!(configs.connectors.keys().collect::<Vec<_>>()));
    }
    let mut out = serde_json::Map::new();
    for name in configs.connectors.keys() {
        let mut entry = serde_json::Map::new();
        for e in &expands {
            match e.as_str() {
                "status" => {
                    entry.insert("status".into(), status_of(&s, name).unwrap_or(Value::Null));
                }
                "info" => {
                    entry.insert("info".into(), info_of(&s, name).unwrap_or(Value::Null));
                }
                _ => {}
            }
        }
        out.insert(name.clone(), Value::Object(entry));
    }
    Json(Value::Object(out))
}

fn kind_of(props: &Props) -> &'static str {
    plugins::find(configdef::get(props, "connector.class", ""))
        .map_or("unknown", |p| p.kind().as_str())
}

fn info_of(s: &RestState, name: &str) -> Option<Value> {
    let configs = s.store.current();
    let entry = configs.connectors.get(name)?;
    let tasks: Vec<Value> = (0..task_configs(&entry.props).len())
        .map(|t| json!({"connector": name, "task": t}))
        .collect();
    Some(
        json!({"name": name, "config": entry.props, "tasks": tasks, "type": kind_of(&entry.props)}),
    )
}

fn status_of(s: &RestState, name: &str) -> Option<Value> {
    let configs = s.store.current();
    let entry = configs.connectors.get(name)?;
    let shown = |st: Option<crate::store::Status>| match st {
        Some(st) => {
            let mut v = json!({"state": st.state, "worker_id": st.worker_id});
            if let Some(t) = st.trace {
                v["trace"] = json!(t);
            }
            v
        }
        None => json!({"state": "UNASSIGNED", "worker_id": ""}),
    };
    let tasks: Vec<Value> = (0..task_configs(&entry.props).len())
        .map(|t| {
            let mut v = shown(s.store.status(name, Some(t)));
            v["id"] = json!(t);
            v
        })
        .collect();
    Some(json!({
        "name": name,
        "connector": shown(s.store.status(name, None)),
        "tasks": tasks,
        "type": kind_of(&entry.props),
    }))
}

#[derive(Deserialize)]
struct CreateBody {
    name: Option<String>,
    config: Option<Value>,
}

/// Validates `props`: a 400 listing every problem, as Kafka's `BadRequestException` does.
fn check(props: &Props) -> ApiResult<()> {
    let infos = configdef::validate(props, None);
    if infos.error_count == 0 {
        return Ok(());
    }
    let problems = infos.problems();
    Err(ApiError(
        StatusCode::BAD_REQUEST,
        format!(
            "Connector configuration is invalid and contains the following {} error(s):\n{}\nYou can also find the above list of errors at the endpoint `/connector-plugins/{{connectorType}}/config/validate`",
            problems.len(),
            problems.join("\n")
        ),
    ))
}

async fn create(State(s): State<RestState>, body: Option<Json<CreateBody>>) -> ApiResult<Response> {
    let Some(Json(body)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body must be JSON: {\"name\": ..., \"config\": {...}}".into(),
        ));
    };
    let mut props = match &body.config {
        Some(c) => {
            configdef::props_from_json(c).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?
        }
        None => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "the body has no \"config\"".into(),
            ));
        }
    };
    let name = match (body.name, props.get("name")) {
        (Some(n), Some(c)) if n != *c => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "Connector name configuration ({c}) doesn't match connector name in the URL ({n})"
                ),
            ));
        }
        (Some(n), _) => n,
        (None, Some(c)) => c.clone(),
        (None, None) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "the connector has no name".into(),
            ));
        }
    };
    props.insert("name".into(), name.clone());
    if name.trim().is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "Connector name may not be empty".into(),
        ));
    }
    if s.store.current().connectors.contains_key(&name) {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("Connector {name} already exists"),
        ));
    }
    check(&props)?;
    s.store
        .put_connector(&name, &props)
        .await
        .map_err(unavailable)?;
    let info = info_of(&s, &name).unwrap_or_else(
        || json!({"name": name, "config": props, "tasks": [], "type": kind_of(&props)}),
    );
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn info(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    info_of(&s, &name).map(Json).ok_or_else(|| not_found(&name))
}

async fn config(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<Json<Props>> {
    s.store
        .current()
        .connectors
        .get(&name)
        .map(|e| Json(e.props.clone()))
        .ok_or_else(|| not_found(&name))
}

async fn put_config(
    State(s): State<RestState>,
    Path(name): Path<String>,
    body: Option<Json<Value>>,
) -> ApiResult<Response> {
    let Some(Json(body)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object of config keys".into(),
        ));
    };
    let mut props =
        configdef::props_from_json(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    match props.get("name") {
        Some(n) if *n != name => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "Connector name configuration ({n}) doesn't match connector name in the URL ({name})"
                ),
            ));
        }
        _ => {
            props.insert("name".into(), name.clone());
        }
    }
    check(&props)?;
    let existed = s.store.current().connectors.contains_key(&name);
    s.store
        .put_connector(&name, &props)
        .await
        .map_err(unavailable)?;
    let info = info_of(&s, &name).unwrap_or(Value::Null);
    let code = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(info)).into_response())
}

async fn status(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    status_of(&s, &name)
        .map(Json)
        .ok_or_else(|| not_found(&name))
}

async fn tasks(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let configs = s.store.current();
    let entry = configs
        .connectors
        .get(&name)
        .ok_or_else(|| not_found(&name))?;
    let out: Vec<Value> = task_configs(&entry.props)
        .into_iter()
        .enumerate()
        .map(|(t, c)| json!({"id": {"connector": name, "task": t}, "config": c}))
        .collect();
    Ok(Json(json!(out)))
}

fn task_index(s: &RestState, name: &str, task: &str) -> ApiResult<usize> {
    let configs = s.store.current();
    let entry = configs
        .connectors
        .get(name)
        .ok_or_else(|| not_found(name))?;
    let n = task_configs(&entry.props).len();
    task.parse::<usize>()
        .ok()
        .filter(|t| *t < n)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!("Task {name}-{task} not found"),
            )
        })
}

async fn task_status(
    State(s): State<RestState>,
    Path((name, task)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let t = task_index(&s, &name, &task)?;
    let st = s.store.status(&name, Some(t));
    let mut v = match st {
        Some(st) => json!({"state": st.state, "worker_id": st.worker_id, "trace": st.trace}),
        None => json!({"state": "UNASSIGNED", "worker_id": ""}),
    };
    v["id"] = json!(t);
    Ok(Json(v))
}

async fn restart_task(
    State(s): State<RestState>,
    Path((name, task)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let t = task_index(&s, &name, &task)?;
    // Restarting one task is a restart of the connector's failed or named tasks.
    let only_failed = s
        .store
        .status(&name, Some(t))
        .is_some_and(|st| st.state == "FAILED");
    s.store
        .request_restart(&RestartRequest {
            connector: name,
            include_tasks: true,
            only_failed,
        })
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_target(s: &RestState, name: &str, t: TargetState) -> ApiResult<()> {
    if !s.store.current().connectors.contains_key(name) {
        return Err(not_found(name));
    }
    s.store.put_target_state(name, t).await.map_err(unavailable)
}

async fn pause(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    set_target(&s, &name, TargetState::Paused).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn resume(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    set_target(&s, &name, TargetState::Started).await?;
    Ok(StatusCode::ACCEPTED)
}

async fn stop(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    set_target(&s, &name, TargetState::Stopped).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RestartQuery {
    #[serde(default)]
    include_tasks: bool,
    #[serde(default)]
    only_failed: bool,
}

async fn restart(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Query(q): Query<RestartQuery>,
) -> ApiResult<Response> {
    if !s.store.current().connectors.contains_key(&name) {
        return Err(not_found(&name));
    }
    s.store
        .request_restart(&RestartRequest {
            connector: name.clone(),
            include_tasks: q.include_tasks,
            only_failed: q.only_failed,
        })
        .await
        .map_err(unavailable)?;
    if q.include_tasks || q.only_failed {
        let body = status_of(&s, &name).unwrap_or(Value::Null);
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn delete(State(s): State<RestState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    let configs = s.store.current();
    let entry = configs
        .connectors
        .get(&name)
        .ok_or_else(|| not_found(&name))?;
    let tasks = task_configs(&entry.props).len();
    s.store
        .delete_connector(&name, tasks)
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn plugin_list() -> Json<Value> {
    let out: Vec<Value> = plugins::ALL
        .iter()
        .map(
            |p| json!({"class": p.class(), "type": p.kind().as_str(), "version": plugins::VERSION}),
        )
        .collect();
    Json(json!(out))
}

async fn validate(Path(plugin): Path<String>, body: Option<Json<Value>>) -> ApiResult<Json<Value>> {
    let Some(p) = plugins::find(&plugin) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("Connector plugin {plugin} not found"),
        ));
    };
    let Some(Json(body)) = body else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object of config keys".into(),
        ));
    };
    let props =
        configdef::props_from_json(&body).map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    if let Some(c) = props.get("connector.class")
        && plugins::find(c).is_none_or(|found| found.class() != p.class())
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("connector.class {c} does not match the plugin {plugin} in the URL"),
        ));
    }
    let infos = configdef::validate(&props, Some(p));
    Ok(Json(serde_json::to_value(infos).unwrap_or(Value::Null)))
}
