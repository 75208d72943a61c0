//! Verify profiles (create, update by deep merge, delete) and message templates.

use uuid::Uuid;
use warden_domain::verify::profile::{
    self, ProfilePatch, VerifyProfile, VerifyProfileCommand, VerifyProfileError,
};
use warden_domain::verify::template::{
    self, TemplateText, VerifyTemplate, VerifyTemplateCommand, VerifyTemplateError, BUILT_IN,
};
use warden_domain::Aggregate;

use super::{domain, Result, VerifyCommands, VerifyError};
use crate::error::CommandError;
use crate::pipeline::Meta;

impl VerifyCommands {
    /// Refuses template ids that are neither built in nor the organization's own.
    async fn check_templates(&self, organization_id: Uuid, ids: &[Uuid]) -> Result<()> {
        for id in ids {
            if self.template_text(organization_id, *id).await?.is_none() {
                return Err(CommandError::Invalid(
                    warden_domain::values::ValidationError::new(
                        "/messaging_template_id",
                        "unknown_template",
                        "is not a template from /v2/verify_profiles/templates",
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A template's text, if the organization may use it.
    pub async fn template_text(
        &self,
        organization_id: Uuid,
        template_id: Uuid,
    ) -> Result<Option<String>> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(id, _)| *id == template_id) {
            return Ok(Some((*text).to_owned()));
        }
        let loaded = self
            .pipeline
            .load::<VerifyTemplate, VerifyError>(&VerifyTemplate::stream_id(template_id))
            .await?;
        Ok(loaded
            .state
            .text
            .as_ref()
            .filter(|_| loaded.state.organization_id == Some(organization_id))
            .map(|t| t.as_str().to_owned()))
    }

    pub async fn create_profile(
        &self,
        organization_id: Uuid,
        name: String,
        patch: ProfilePatch,
        meta: &Meta,
    ) -> Result<(Uuid, Option<i64>)> {
        self.check_templates(organization_id, &patch.template_ids())
            .await?;
        let profile_id = Uuid::now_v7();
        let settings = patch.into_new_settings(name);
        let executed = self
            .pipeline
            .execute::<VerifyProfile, VerifyError, _>(
                &VerifyProfile::stream_id(profile_id),
                meta,
                |state, ctx| {
                    profile::decide(
                        state,
                        VerifyProfileCommand::Create {
                            profile_id,
                            organization_id,
                            settings: settings.clone(),
                        },
                        ctx,
                    )
                    .map_err(VerifyError::from)
                },
            )
            .await?;
        Ok((profile_id, executed.position))
    }

    pub async fn update_profile(
        &self,
        organization_id: Uuid,
        profile_id: Uuid,
        patch: ProfilePatch,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.visible_profile(organization_id, profile_id).await?;
        self.check_templates(organization_id, &patch.template_ids())
            .await?;
        let executed = self
            .pipeline
            .execute::<VerifyProfile, VerifyError, _>(
                &VerifyProfile::stream_id(profile_id),
                meta,
                |state, ctx| {
                    let Some(current) = state.settings.clone() else {
                        return Err(VerifyProfileError::NotFound.into());
                    };
                    let settings = patch.clone().apply_to(current);
                    profile::decide(state, VerifyProfileCommand::Update { settings }, ctx)
                        .map_err(VerifyError::from)
                },
            )
            .await?;
        Ok(executed.position)
    }

    pub async fn delete_profile(
        &self,
        organization_id: Uuid,
        profile_id: Uuid,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        self.visible_profile(organization_id, profile_id).await?;
        let executed = self
            .pipeline
            .execute::<VerifyProfile, VerifyError, _>(
                &VerifyProfile::stream_id(profile_id),
                meta,
                |state, ctx| {
                    profile::decide(state, VerifyProfileCommand::Delete, ctx)
                        .map_err(VerifyError::from)
                },
            )
            .await?;
        Ok(executed.position)
    }

    pub async fn create_template(
        &self,
        organization_id: Uuid,
        text: TemplateText,
        meta: &Meta,
    ) -> Result<(Uuid, Option<i64>)> {
        let template_id = Uuid::now_v7();
        let executed = self
            .pipeline
            .execute::<VerifyTemplate, VerifyError, _>(
                &VerifyTemplate::stream_id(template_id),
                meta,
                |state, ctx| {
                    template::decide(
                        state,
                        VerifyTemplateCommand::Create {
                            template_id,
                            organization_id,
                            text: text.clone(),
                        },
                        ctx,
                    )
                    .map_err(VerifyError::from)
                },
            )
            .await?;
        Ok((template_id, executed.position))
    }

    pub async fn update_template(
        &self,
        organization_id: Uuid,
        template_id: Uuid,
        text: TemplateText,
        meta: &Meta,
    ) -> Result<Option<i64>> {
        if BUILT_IN.iter().any(|(id, _)| *id == template_id) {
            return Err(domain(VerifyTemplateError::NotFound));
        }
        let executed = self
            .pipeline
            .execute::<VerifyTemplate, VerifyError, _>(
                &VerifyTemplate::stream_id(template_id),
                meta,
                |state, ctx| {
                    template::decide(
                        state,
                        VerifyTemplateCommand::Update {
                            organization_id,
                            text: text.clone(),
                        },
                        ctx,
                    )
                    .map_err(VerifyError::from)
                },
            )
            .await?;
        Ok(executed.position)
    }
}
