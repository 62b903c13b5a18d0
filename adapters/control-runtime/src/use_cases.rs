//! The runtime's entry points, one per use case: blocking calls for `spawn_blocking`
//! handlers (reads run on the calling thread against the read model; mutations go through the
//! writer and return after their commit) and async ones for what waits on a client or runs on
//! a stream task.

use super::*;

impl Runtime {
    /// Authenticates an operator request (blocking).
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Authenticated, Failure> {
        self.read(|s, cx| s.accounts.authenticate(cx, credentials))?
    }

    /// Authenticates an operator request from async code: the same as
    /// [`Runtime::authenticate`] without blocking the worker. A refusal's audit record is
    /// written behind (it rides the next commit, or the writer's own within
    /// `deferred_sync`), so refused requests never cost a commit each; whether there was one
    /// (unauthenticated requests have a per-source budget) is in [`Refused::audited`].
    pub async fn authenticate_async(&self, credentials: &Credentials<'_>) -> Result<Authenticated, Refused> {
        let (answer, staged) = {
            let inner = &self.inner;
            let mut cx = Cx::new(&*inner.model, &inner.sessions as &dyn Sessions, inner.clock.now());
            let answer = inner.services.accounts.authenticate(&mut cx, credentials);
            (answer, cx.finish())
        };
        let audited = staged.writes.iter().any(|w| matches!(w, Write::AppendAudit(_)));
        let failed = |failure: Failure| Refused { failure, audited: false };
        match answer {
            Ok(auth) => {
                if !staged.is_empty() {
                    self.mutate_async(move |_, cx| cx.restage(staged)).await.map_err(failed)?;
                }
                Ok(auth)
            }
            Err(failure) => {
                if !staged.is_empty() {
                    self.write_behind(move |_, cx| cx.restage(staged)).await.map_err(failed)?;
                }
                Err(Refused { failure, audited })
            }
        }
    }

    /// Audit records of unauthenticated requests dropped by their sources' budget so far.
    pub fn audit_rows_dropped(&self) -> u64 {
        self.inner.services.accounts.audit_rows_dropped()
    }

    /// Issues an enrollment code (blocking).
    pub fn enroll_client(
        &self,
        actor: &Actor,
        name: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let (actor, name) = (actor.clone(), name.to_owned());
        self.mutate(move |s, cx| s.clients.enroll_client(cx, &actor, &name, ttl_secs))?
    }

    /// Issues a re-enrollment code (blocking).
    pub fn reenroll_client(
        &self,
        actor: &Actor,
        reference: &str,
        ttl_secs: Option<u64>,
    ) -> Result<EnrollTicket, Failure> {
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.mutate(move |s, cx| s.clients.reenroll_client(cx, &actor, &reference, ttl_secs))?
    }

    /// Redeems an enrollment code.
    pub async fn redeem(&self, code: Secret) -> Result<Redeemed, Failure> {
        self.mutate_async(move |s, cx| s.clients.redeem(cx, &code)).await?
    }

    /// Revokes a client (blocking).
    pub fn revoke(&self, actor: &Actor, reference: &str) -> Result<Client, Failure> {
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.mutate(move |s, cx| s.clients.revoke(cx, &actor, &reference))?
    }

    /// Renames a client (blocking).
    pub fn rename_client(&self, actor: &Actor, reference: &str, new_name: &str) -> Result<Client, Failure> {
        let (actor, reference, new_name) = (actor.clone(), reference.to_owned(), new_name.to_owned());
        self.mutate(move |s, cx| s.clients.rename_client(cx, &actor, &reference, &new_name))?
    }

    /// Deletes a revoked client (blocking).
    pub fn delete_client(&self, actor: &Actor, reference: &str) -> Result<Client, Failure> {
        let (actor, reference) = (actor.clone(), reference.to_owned());
        self.mutate(move |s, cx| s.clients.delete_client(cx, &actor, &reference))?
    }

    /// The clients `actor` may see (blocking).
    pub fn list_clients(&self, actor: &Actor) -> Result<Vec<ClientView>, Failure> {
        self.read(|s, cx| s.clients.list_clients(cx, actor))?
    }

    /// One client (blocking).
    pub fn get_client(&self, actor: &Actor, reference: &str) -> Result<ClientView, Failure> {
        self.read(|s, cx| s.clients.get_client(cx, actor, reference))?
    }

    /// Pushes a rule and waits up to `ack_timeout` for the client's outcome.
    ///
    /// The steps, each a debug-level span under `control.push`: `begin` (decided and
    /// committed by the writer, `store.commit`), the command queued on the stream, `link.ack`
    /// (the wait), `complete` (only an undelivered command commits anything).
    pub async fn push_rule(
        &self,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<RuleView, PushFailure> {
        let started = Instant::now();
        let span = tracing::debug_span!("control.push", client = client_ref, rule = tracing::field::Empty);
        let result = self.push_steps(actor, client_ref, spec, ack_timeout).instrument(span).await;
        self.observe(Stage::Push, started);
        result
    }

    async fn push_steps(
        &self,
        actor: &Actor,
        client_ref: &str,
        spec: &RuleSpec,
        ack_timeout: Duration,
    ) -> Result<RuleView, PushFailure> {
        let (a, c, sp) = (actor.clone(), client_ref.to_owned(), spec.clone());
        // The command is queued right after the commit, in commit order, with its waiter
        // registered first: a later removal can never overtake it, and an answer that comes
        // at once is not missed.
        let queue = |inner: &Inner, begun: &Result<Begun, PushFailure>| {
            begun.as_ref().ok().map(|begun| {
                let waiter = inner.sessions.wait_outcome(begun.rule.id);
                let sent = inner.sessions.send(&begun.rule.client, begun.command.clone());
                (waiter, sent, Instant::now())
            })
        };
        // A push first in its transaction is sent before the commit (the client binds while
        // the disk syncs); should that commit fail, the client is told to drop the rule.
        let undo = |inner: &Inner, begun: &Result<Begun, PushFailure>, queued: &Option<_>| {
            if let (Ok(begun), Some((_, true, _))) = (begun, queued) {
                let remove = portunus_core::ports::ClientCommand::Remove { rule: begun.rule.id };
                let _ = inner.sessions.send(&begun.rule.client, remove);
            }
            if let Ok(begun) = begun {
                inner.sessions.forget_waiters(begun.rule.id);
            }
        };
        let (begun, queued) = self
            .mutate_pipelined(move |s, cx| s.rules.begin_push(cx, &a, &c, &sp, ack_timeout), queue, undo)
            .await?;
        let begun = begun?;
        let (waiter, sent, sent_at) =
            queued.ok_or_else(|| Failure::new(ErrorCode::Internal, "a begun push was not queued"))?;
        let rule = begun.rule.id;
        tracing::Span::current().record("rule", rule.get());
        let outcome = if sent {
            let waited = tokio::time::timeout(ack_timeout, waiter)
                .instrument(tracing::debug_span!("link.ack", rule = rule.get()))
                .await;
            match waited {
                Ok(Ok(state)) => {
                    self.observe(Stage::Ack, sent_at);
                    PushOutcome::Reported(state)
                }
                _ => PushOutcome::TimedOut,
            }
        } else {
            drop(waiter);
            PushOutcome::NotDelivered
        };
        self.inner.sessions.forget_waiters(rule);
        if outcome == PushOutcome::NotDelivered {
            let a = actor.clone();
            self.mutate_async(move |s, cx| s.rules.complete_push(cx, &a, begun, outcome, ack_timeout)).await?
        } else {
            // Only an undelivered push writes anything; the others just shape the answer.
            let mut cx = Cx::new(&*self.inner.model, &self.inner.sessions as &dyn Sessions, self.now());
            self.inner.services.rules.complete_push(&mut cx, actor, begun, outcome, ack_timeout)
        }
    }

    /// Removes a rule (blocking).
    pub fn remove_rule(&self, actor: &Actor, id: RuleId) -> Result<Rule, Failure> {
        let actor = actor.clone();
        self.mutate(move |s, cx| s.rules.remove_rule(cx, &actor, id))?
    }

    /// Replaces a rule's own caps; the client applies them in place (blocking).
    pub fn set_rule_caps(
        &self,
        actor: &Actor,
        id: RuleId,
        limits: &portunus_core::ratelimit::RateLimits,
    ) -> Result<RuleView, Failure> {
        let (actor, limits) = (actor.clone(), *limits);
        self.mutate(move |s, cx| s.rules.set_rule_caps(cx, &actor, id, &limits))?
    }

    // ----- owner envelopes ----------------------------------------------------------------

    /// Creates or replaces an owner envelope (blocking).
    pub fn set_owner_caps(
        &self,
        actor: &Actor,
        user: &str,
        client: &str,
        envelope: &portunus_core::ratelimit::OwnerEnvelope,
    ) -> Result<portunus_core::service::OwnerCapsView, Failure> {
        let (actor, user, client, envelope) = (actor.clone(), user.to_owned(), client.to_owned(), *envelope);
        let view = self.mutate(move |_, cx| {
            portunus_core::service::OwnerCapsService.set_owner_caps(cx, &actor, &user, &client, &envelope)
        })??;
        tracing::info!(event = "rate_limit.owner_set", user = %view.user, client = %view.client);
        Ok(view)
    }

    /// Removes an owner envelope (blocking).
    pub fn delete_owner_caps(
        &self,
        actor: &Actor,
        user: &str,
        client: &str,
    ) -> Result<portunus_core::service::OwnerCapsView, Failure> {
        let (actor, user, client) = (actor.clone(), user.to_owned(), client.to_owned());
        let view = self.mutate(move |_, cx| {
            portunus_core::service::OwnerCapsService.delete_owner_caps(cx, &actor, &user, &client)
        })??;
        tracing::info!(event = "rate_limit.owner_removed", user = %view.user, client = %view.client);
        Ok(view)
    }

    /// One owner envelope (blocking).
    pub fn get_owner_caps(
        &self,
        actor: &Actor,
        user: &str,
        client: &str,
    ) -> Result<portunus_core::service::OwnerCapsView, Failure> {
        self.read(|_, cx| portunus_core::service::OwnerCapsService.get_owner_caps(cx, actor, user, client))?
    }

    /// Owner envelopes the actor may read, optionally one user's (blocking).
    pub fn list_owner_caps(
        &self,
        actor: &Actor,
        user: Option<&str>,
    ) -> Result<Vec<portunus_core::service::OwnerCapsView>, Failure> {
        self.read(|_, cx| portunus_core::service::OwnerCapsService.list_owner_caps(cx, actor, user))?
    }

    /// The rules `actor` may see (blocking).
    pub fn list_rules(&self, actor: &Actor, filter: &RuleFilter) -> Result<Vec<RuleView>, Failure> {
        self.read(|s, cx| s.rules.list_rules(cx, actor, filter))?
    }

    /// One rule (blocking).
    pub fn get_rule(&self, actor: &Actor, id: RuleId) -> Result<RuleView, Failure> {
        self.read(|s, cx| s.rules.get_rule(cx, actor, id))?
    }

    /// One rule's traffic (blocking).
    pub fn rule_stats(&self, actor: &Actor, id: RuleId) -> Result<RuleStatsView, Failure> {
        let totals = |rule: RuleId| self.stats().book.get(&rule).cloned();
        self.read(|s, cx| s.rules.rule_stats(cx, actor, id, &totals))?
    }

    // ----- accounts -----------------------------------------------------------------------

    /// Where onboarding stands (blocking).
    pub fn onboarding_status(&self) -> Result<Onboarding, Failure> {
        self.inner.services.accounts.onboarding_status(&*self.inner.model)
    }

    /// Issues a new setup token while onboarding is open (blocking; at server start).
    pub fn start_onboarding(&self) -> Result<Option<(Secret, Timestamp)>, Failure> {
        self.mutate(|s, cx| s.accounts.start_onboarding(cx))?
    }

    /// Creates the first superadmin (blocking; the password is hashed on this thread).
    pub fn complete_onboarding(
        &self,
        setup_token: &str,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
    ) -> Result<User, Failure> {
        let prepared = self.inner.services.accounts.prepare_onboarding(
            &*self.inner.model,
            setup_token,
            user_id,
            password,
            remote,
            self.now(),
        );
        let (token, user) = (setup_token.to_owned(), user_id.to_owned());
        self.mutate(move |s, cx| s.accounts.finish_onboarding(cx, &token, &user, remote, prepared))?
    }

    /// Checks a password and opens a Web session (blocking).
    pub fn login(
        &self,
        user_id: &str,
        password: &str,
        remote: Option<IpAddr>,
    ) -> Result<LoginOutcome, Failure> {
        let prepared = self.inner.services.accounts.prepare_login(
            &*self.inner.model,
            user_id,
            password,
            remote,
            self.now(),
        );
        let user = user_id.to_owned();
        self.mutate(move |s, cx| s.accounts.finish_login(cx, &user, remote, prepared))?
    }

    /// Ends the caller's Web session (blocking).
    pub fn logout(&self, actor: &Actor, session: Option<&SessionId>) -> Result<(), Failure> {
        let (actor, session) = (actor.clone(), session.cloned());
        self.mutate(move |s, cx| s.accounts.logout(cx, &actor, session.as_ref()))?
    }

    /// The caller's own account (blocking).
    pub fn whoami(&self, actor: &Actor) -> Result<User, Failure> {
        self.inner.services.accounts.whoami(&*self.inner.model, actor)
    }

    /// Changes the caller's password (blocking; hashing runs on this thread).
    pub fn change_password(
        &self,
        actor: &Actor,
        current: &str,
        new: &str,
        session: Option<&SessionId>,
    ) -> Result<(), Failure> {
        let prepared = self.inner.services.accounts.prepare_password_change(
            &*self.inner.model,
            actor,
            current,
            new,
            self.now(),
        );
        let (actor, session) = (actor.clone(), session.cloned());
        self.mutate(move |s, cx| s.accounts.finish_password_change(cx, &actor, session.as_ref(), prepared))?
    }

    /// Every user (blocking).
    pub fn list_users(&self, actor: &Actor) -> Result<Vec<User>, Failure> {
        self.read(|s, cx| s.accounts.list_users(cx, actor))?
    }

    /// One user (blocking).
    pub fn get_user(&self, actor: &Actor, id: &str) -> Result<User, Failure> {
        self.read(|s, cx| s.accounts.get_user(cx, actor, id))?
    }

    /// Creates an account (blocking; hashing runs on this thread).
    pub fn create_user(&self, actor: &Actor, new: &NewUser) -> Result<User, Failure> {
        let prepared = self.inner.services.accounts.prepare_new_user(actor, new);
        let (actor, new) = (actor.clone(), new.clone());
        self.mutate(move |s, cx| s.accounts.create_user(cx, &actor, &new, prepared))?
    }

    /// Deletes an account (blocking).
    pub fn delete_user(&self, actor: &Actor, id: &str) -> Result<User, Failure> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.mutate(move |s, cx| s.accounts.delete_user(cx, &actor, &id))?
    }

    /// A user's API tokens (blocking).
    pub fn list_tokens(&self, actor: &Actor, user: &str) -> Result<Vec<ApiToken>, Failure> {
        self.read(|s, cx| s.accounts.list_tokens(cx, actor, user))?
    }

    /// Mints an API token (blocking).
    pub fn create_token(
        &self,
        actor: &Actor,
        user: &str,
        name: Option<&str>,
    ) -> Result<MintedToken, Failure> {
        let (actor, user, name) = (actor.clone(), user.to_owned(), name.map(str::to_owned));
        self.mutate(move |s, cx| s.accounts.create_token(cx, &actor, &user, name.as_deref()))?
    }

    /// Revokes an API token (blocking).
    pub fn revoke_token(&self, actor: &Actor, user: &str, token: &str) -> Result<(), Failure> {
        let (actor, user, token) = (actor.clone(), user.to_owned(), token.to_owned());
        self.mutate(move |s, cx| s.accounts.revoke_token(cx, &actor, &user, &token))?
    }

    /// Grants (blocking).
    pub fn list_grants(&self, actor: &Actor, user: Option<&str>) -> Result<Vec<Grant>, Failure> {
        self.read(|s, cx| s.accounts.list_grants(cx, actor, user))?
    }

    /// One grant (blocking).
    pub fn get_grant(&self, actor: &Actor, id: &str) -> Result<Grant, Failure> {
        self.read(|s, cx| s.accounts.get_grant(cx, actor, id))?
    }

    /// Creates a grant (blocking).
    pub fn create_grant(&self, actor: &Actor, new: &NewGrant) -> Result<Grant, Failure> {
        let (actor, new) = (actor.clone(), new.clone());
        self.mutate(move |s, cx| s.accounts.create_grant(cx, &actor, &new))?
    }

    /// Revokes a grant and the rules it alone covered (blocking).
    pub fn delete_grant(&self, actor: &Actor, id: &str) -> Result<(Grant, Vec<Rule>), Failure> {
        let (actor, id) = (actor.clone(), id.to_owned());
        self.mutate(move |s, cx| s.accounts.delete_grant(cx, &actor, &id))?
    }

    // ----- administration -----------------------------------------------------------------

    /// Checks (and audits) that `actor` may take a backup of the store (blocking).
    pub fn authorize_backup(&self, actor: &Actor) -> Result<(), Failure> {
        self.read(|s, cx| s.admin.authorize_backup(cx, actor))?
    }

    /// Prunes audit records written before `before`, one batch (blocking).
    pub fn prune_audit(&self, actor: &Actor, before: Timestamp) -> Result<AuditPruned, Failure> {
        let actor = actor.clone();
        self.mutate(move |s, cx| s.admin.prune_audit(cx, &actor, before))?
    }

    /// Applies the audit retention once: prunes, batch by batch, what is older than the
    /// retention (as the operator, so each batch leaves an `audit.prune` record). Returns the
    /// records deleted; nothing when retention is off or nothing is old enough.
    pub async fn apply_audit_retention(&self) -> Result<u64, Failure> {
        let Some(before) = self.settings().audit.prune_before(self.now()) else { return Ok(0) };
        let mut total = 0;
        loop {
            // Nothing to prune is answered from the read model, without a commit.
            let plan = self.inner.model.audit_prune_plan(before, 1)?;
            if plan.is_none() {
                return Ok(total);
            }
            let pruned =
                self.mutate_async(move |s, cx| s.admin.prune_audit(cx, &Actor::operator(), before)).await??;
            total += pruned.rows;
            if !pruned.more {
                return Ok(total);
            }
        }
    }

    /// The advertised-endpoint settings (blocking).
    pub fn endpoint_settings(&self, actor: &Actor) -> Result<EndpointView, Failure> {
        self.read(|s, cx| s.admin.endpoint_settings(cx, actor))?
    }

    /// Sets or clears the advertised-endpoint override (blocking).
    pub fn set_endpoint_override(&self, actor: &Actor, value: Option<&str>) -> Result<EndpointView, Failure> {
        let (actor, value) = (actor.clone(), value.map(str::to_owned));
        self.mutate(move |s, cx| s.admin.set_endpoint_override(cx, &actor, value.as_deref()))?
    }

    /// A page of the audit trail (blocking).
    pub fn audit_page(&self, actor: &Actor, query: &AuditQuery) -> Result<AuditPage, Failure> {
        self.read(|s, cx| s.admin.audit_page(cx, actor, query))?
    }

    /// The metrics on the operator API (blocking).
    pub fn metrics_for(&self, actor: &Actor) -> Result<MetricsSnapshot, Failure> {
        let totals = |rule: RuleId| self.stats().book.get(&rule).map(|t| t.totals());
        let snapshot = self.read(|s, cx| s.admin.metrics_for(cx, actor, &totals))??;
        Ok(MetricsSnapshot {
            audit_rows_dropped: self.audit_rows_dropped(),
            sni_listeners: self.sni_listener_rows(),
            quotas: self.with_quota_events(snapshot.quotas.clone()),
            ..snapshot
        })
    }

    /// The data behind `/metrics` (blocking).
    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot, Failure> {
        let totals = |rule: RuleId| self.stats().book.get(&rule).map(|t| t.totals());
        let snapshot =
            portunus_core::service::metrics_snapshot(&*self.inner.model, &self.inner.sessions, &totals)?;
        Ok(MetricsSnapshot {
            audit_rows_dropped: self.audit_rows_dropped(),
            sni_listeners: self.sni_listener_rows(),
            quotas: self.with_quota_events(snapshot.quotas.clone()),
            ..snapshot
        })
    }

    /// The SNI listeners clients reported, labelled with their clients' current names.
    fn sni_listener_rows(&self) -> Vec<portunus_core::service::SniListenerRow> {
        let reports = self.inner.sni.lock().unwrap_or_else(|p| p.into_inner()).clone();
        reports
            .into_iter()
            .filter_map(|(client, listeners)| {
                let found = portunus_core::ports::ClientStore::get_client(&*self.inner.model, &client);
                let name = found.ok().flatten()?.name.to_string();
                Some(listeners.into_iter().map(move |report| portunus_core::service::SniListenerRow {
                    client: name.clone(),
                    report,
                }))
            })
            .flatten()
            .collect()
    }

    /// Keeps a client's SNI listener counters for `/metrics`. A client that has SNI
    /// listeners (or just lost its last one) restates all of them in every stats report, so
    /// each report replaces what was kept; an empty list forgets the client's listeners.
    pub fn record_sni_stats(&self, client: &ClientId, listeners: Vec<portunus_core::sni::SniListenerReport>) {
        let mut kept = self.inner.sni.lock().unwrap_or_else(|p| p.into_inner());
        if listeners.is_empty() {
            kept.remove(client);
        } else {
            kept.insert(client.clone(), listeners);
        }
    }

    // ----- the server side of control streams ---------------------------------------------

    /// Checks a client's bearer token.
    pub fn authenticate_client(&self, token: &str) -> Result<Client, AuthFailure> {
        self.inner.services.clients.authenticate_client(&*self.inner.model, token)
    }

    /// Opens a client's stream: checks its token again (a revoke or rotation since the
    /// handshake refuses it), records the connect, queues the plan on `tx` and registers the
    /// stream, the last two in commit order, so every later mutation's commands reach this
    /// stream and every earlier one is in its plan. Returns the registration and the number
    /// of rules replayed.
    pub async fn open_session(
        &self,
        token: &str,
        version: &str,
        info: SessionInfo,
        tx: tokio::sync::mpsc::UnboundedSender<Outbound>,
    ) -> Result<(Registration, usize), Failure> {
        let claimed = portunus_core::enroll::split_token(token).map(|(id, _)| id);
        let (token, version) = (token.to_owned(), version.to_owned());
        let announced = info.clone();
        let inner = self.inner.clone();
        let open = move |s: &Services, cx: &mut Cx<'_, dyn StoreTx + '_>| {
            let plan = s.clients.session_opened(cx, &token, &version, announced.instance);
            if let Ok(plan) = &plan {
                // Later mutations of this transaction see the stream as connected.
                inner
                    .opening
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(plan.client.id.clone(), announced);
            }
            plan
        };
        let register = move |inner: &Inner, plan: &Result<SessionPlan, Failure>| {
            plan.as_ref().ok().map(|plan| {
                inner.opening.lock().unwrap_or_else(|p| p.into_inner()).remove(&plan.client.id);
                let _ = tx.send(Outbound::Plan(Box::new(plan.clone())));
                inner.sessions.register(&plan.client.id, plan.client.name.as_str(), info, tx)
            })
        };
        let (plan, registration) = match self.mutate_then(open, register).await {
            Ok(done) => done,
            Err(failure) => {
                // The transaction failed, so no completion ran: the claim this stream made
                // for the rest of its group must not outlive it and refuse later streams.
                if let Some(id) = claimed {
                    self.inner.opening.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                }
                return Err(failure);
            }
        };
        let n_rules = plan?.rules.len();
        let registration =
            registration.ok_or_else(|| Failure::new(ErrorCode::Internal, "stream not registered"))?;
        Ok((registration, n_rules))
    }

    /// Applies a client's activation report and wakes the push waiting for it.
    pub async fn rule_outcome(
        &self,
        client: &ClientId,
        rule: RuleId,
        event: RuleEvent,
    ) -> Result<Option<RuleState>, Failure> {
        let client = client.clone();
        // Write-behind: the push waiting for this answers without a second wait for the disk.
        // A crash before the next commit loses only the outcome; the rule, durable since its
        // push, is replayed when the client reconnects and the client reports again.
        let state =
            self.write_behind(move |s, cx| s.clients.rule_outcome(cx, &client, rule, event)).await??;
        if let Some(state) = &state {
            self.inner.sessions.publish_outcome(rule, state);
        }
        Ok(state)
    }

    /// Folds a client's traffic report into the book (rules it does not carry are ignored).
    pub async fn record_stats(
        &self,
        client: &ClientId,
        reports: Vec<(RuleId, RuleReport)>,
    ) -> Result<(), Failure> {
        let metered = {
            let (this, client) = (self.clone(), client.clone());
            blocking(move || {
                let owned = portunus_core::service::owned_reports(&*this.inner.model, &client, reports)?;
                // Bytes each owner forwarded since the last report (the book folds restarts,
                // so the growth of its totals is what is new).
                let mut grew: std::collections::BTreeMap<portunus_core::ids::UserId, u64> =
                    Default::default();
                let now = this.now();
                let mut stats = this.stats();
                for (rule, report) in owned {
                    let totals = stats.book.entry(rule).or_default();
                    let before = totals.totals();
                    totals.record(report);
                    let after = totals.totals();
                    let grew_in = after.bytes_in.saturating_sub(before.bytes_in);
                    let grew_out = after.bytes_out.saturating_sub(before.bytes_out);
                    let delta = grew_in.saturating_add(grew_out);
                    // The owner is looked up only for rules that moved bytes.
                    let owner = match delta {
                        0 => None,
                        _ => portunus_core::ports::RuleStore::get_rule(&*this.inner.model, rule)?
                            .map(|r| r.owner),
                    };
                    if let Some(owner) = owner {
                        *grew.entry(owner.clone()).or_default() += delta;
                        let key =
                            portunus_core::history::TrafficKey { user: owner, client: client.clone(), rule };
                        stats.minutes.add(now, key, grew_in, grew_out);
                    }
                    stats.dirty.insert(rule);
                }
                Ok::<_, Failure>(grew)
            })
            .await?
        };
        for (user, bytes) in metered {
            self.meter_usage(user, client.clone(), bytes).await?;
        }
        Ok(())
    }

    /// Marks a client's stream gone: its active gauges drop to zero, and its SNI listeners
    /// leave `/metrics` until it reports them again.
    pub async fn session_closed(&self, client: &ClientId) -> Result<(), Failure> {
        self.inner.sni.lock().unwrap_or_else(|p| p.into_inner()).remove(client);
        let this = self.clone();
        let client = client.clone();
        blocking(move || {
            let rules = portunus_core::ports::RuleStore::rules_for_client(&*this.inner.model, &client)?;
            let mut stats = this.stats();
            for rule in rules {
                if let Some(totals) = stats.book.get_mut(&rule.id) {
                    totals.client_gone();
                    stats.dirty.insert(rule.id);
                }
            }
            Ok(())
        })
        .await
    }

    /// Persists traffic totals that changed since the last flush; returns how many.
    pub async fn flush_stats(&self) -> Result<usize, Failure> {
        let changed: Vec<_> = {
            let mut stats = self.stats();
            let dirty = std::mem::take(&mut stats.dirty);
            dirty.into_iter().filter_map(|id| stats.book.get(&id).map(|t| (id, t.clone()))).collect()
        };
        if changed.is_empty() {
            return Ok(0);
        }
        self.mutate_async(move |_, cx| {
            let writes = portunus_core::service::flush_writes(cx.store, changed)?;
            let n = writes.len();
            cx.restage(Staged { writes, effects: Vec::new() });
            Ok::<usize, Failure>(n)
        })
        .await?
    }

    /// Makes every change durable (write-behind outcomes included); for shutdown.
    pub async fn sync(&self) -> Result<(), Failure> {
        self.mutate_async(|_, _| ()).await
    }

    /// Applies the audit retention at start and every `prune_every` until the task is
    /// aborted (nothing when retention is off).
    pub fn spawn_audit_retention(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let every = self.settings().audit.prune_every;
        tokio::spawn(async move {
            // The first run is right after start; then every `prune_every`.
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                match this.apply_audit_retention().await {
                    Ok(0) => {}
                    Ok(rows) => tracing::info!(event = "audit.pruned", rows, reason = "retention"),
                    Err(err) => {
                        tracing::warn!(event = "store.error", error = %err, "could not prune the audit trail")
                    }
                }
            }
        })
    }

    /// Flushes changed totals every `every` until the task is aborted.
    pub fn spawn_flusher(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(err) = this.flush_stats().await {
                    tracing::warn!(event = "store.error", error = %err, "could not persist traffic totals");
                }
            }
        })
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|err| Err(Failure::new(ErrorCode::Internal, err.to_string())))
}
