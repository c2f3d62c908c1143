//! Live reload: `SIGHUP` or `POST /admin/reload` re-reads the configuration
//! file, validates all of it, and swaps in what can change while serving
//! (the access rules, the ownership settings, the admin roles and address
//! allowlist, limits, budgets, budget alerts and prices, and the TLS certificates). An invalid file is refused and the running
//! configuration stays. Requests in flight keep the rules they started with.

use serde::Serialize;

use crate::AppState;
use crate::config::{Config, ConfigErrors, ConfigSource};

/// What a reload did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// Always true on success.
    pub reloaded: bool,
    /// Rules now in force.
    pub rules: usize,
    /// Changed sections that only take effect after a restart.
    pub restart_needed_for: Vec<&'static str>,
    /// What the new configuration leaves not working (e.g. own budgets'
    /// alerts with no `budget_alerts.webhook`); also logged.
    pub warnings: Vec<String>,
}

/// Re-reads and applies the configuration file.
pub fn reload(state: &AppState) -> Result<ReloadReport, ConfigErrors> {
    let ConfigSource::File(path) = &state.config.source else {
        return Err(ConfigErrors {
            source: None,
            errors: vec![crate::config::ConfigError {
                location: "configuration".into(),
                message: "the gateway runs on built-in defaults: there is no file to reload".into(),
            }],
        });
    };
    let new = Config::load(Some(path))?;
    let old = &state.config;
    let mut restart = Vec::new();
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    if old.listen != new.listen {
        restart.push("listen");
    }
    if old.database != new.database {
        restart.push("database");
    }
    if differs(&old.providers, &new.providers) || old.default_provider != new.default_provider {
        restart.push("providers");
    }
    if old.max_body_bytes != new.max_body_bytes {
        restart.push("limits.max_body_bytes");
    }
    if old.limits.max_tracked_subjects != new.limits.max_tracked_subjects {
        restart.push("limits.max_tracked_subjects");
    }
    if differs(&old.auth, &new.auth) || differs(&old.master_key, &new.master_key) {
        restart.push("auth");
    }
    if old.admin.listen != new.admin.listen {
        restart.push("admin.listen");
    }
    if differs(&old.server, &new.server)
        || differs(&old.ledger, &new.ledger)
        || differs(&old.log, &new.log)
    {
        restart.push("server");
    }
    let rules = new.rules.rules.len();
    state.limits.reconfigure(&new);
    let warnings = state.limits.silent_alerts();
    for w in &warnings {
        tracing::warn!("reload: {w}");
    }
    state.rules.store(std::sync::Arc::new(new.rules));
    state.authn.set_admin_config(&new.admin);
    state.ownership.store(std::sync::Arc::new(new.ownership));
    if let Some(tls) = &state.tls {
        // Errors are logged there; the certificates in use stay.
        let _ = tls.reload();
    }
    if !restart.is_empty() {
        tracing::warn!(sections = ?restart, "configuration reloaded; these changed sections take effect only after a restart");
    }
    tracing::info!(rules, "configuration reloaded");
    Ok(ReloadReport {
        reloaded: true,
        rules,
        restart_needed_for: restart,
        warnings,
    })
}

/// [`reload`], and on success the `config_reloaded` audit event naming `actor`.
pub async fn reload_audited(
    state: &AppState,
    actor: &crate::authn::Admin,
) -> Result<ReloadReport, ConfigErrors> {
    let report = reload(state)?;
    crate::admin::audit_change(
        state,
        actor,
        "config_reloaded",
        "config".into(),
        None,
        serde_json::to_value(&report).ok(),
    )
    .await;
    Ok(report)
}

/// Reloads on every SIGHUP until the process ends.
pub async fn on_sighup(state: AppState) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        let actor = crate::authn::Admin::signal("sighup");
        while hup.recv().await.is_some() {
            if let Err(e) = reload_audited(&state, &actor).await {
                tracing::error!(errors = %e, "reload refused: the running configuration stays");
                // Certificates live in their own files: renew them even when the
                // configuration file is being edited.
                if let Some(tls) = &state.tls {
                    let _ = tls.reload();
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = state;
}
