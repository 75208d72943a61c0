//! Message templates for verification codes (`/v2/verify_profiles/templates`): a text with
//! `{{code}}` and optionally `{{app_name}}`. Telnyx's built-in templates are always there;
//! an organization adds its own. Stream `verify_template-<uuid>`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, Ctx};
use crate::event::DomainEvent;
use crate::values::ValidationError;

/// Telnyx's built-in templates, by the ids its documentation uses.
pub const BUILT_IN: &[(Uuid, &str)] = &[
    (
        Uuid::from_u128(0x0abb5b4f_459f_445a_bfcd_488998b7572d),
        "Your {{app_name}} verification code is: {{code}}.",
    ),
    (
        Uuid::from_u128(0x2ca3f1da_5621_4aa6_ae56_df21caff79e0),
        "{{code}} is your verification code for {{app_name}}.",
    ),
    (
        Uuid::from_u128(0x33dfb056_6c1b_40bd_920e_4243e01248a5),
        "Your {{app_name}} verification code is: {{code}}. Do not share this code with anyone.",
    ),
];

/// The template used when a profile names none.
pub const DEFAULT_TEMPLATE: &str = "Your {{app_name}} verification code is: {{code}}.";

/// A template text: 1 to 500 characters, one line, containing `{{code}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TemplateText(String);

impl TemplateText {
    pub fn parse(pointer: &str, raw: &str) -> Result<Self, ValidationError> {
        let text = raw.trim();
        if text.is_empty() || text.chars().count() > 500 || text.chars().any(char::is_control) {
            return Err(ValidationError::new(
                pointer,
                "invalid_text",
                "must be a single line of 1 to 500 characters",
            ));
        }
        if !text.contains("{{code}}") {
            return Err(ValidationError::new(
                pointer,
                "missing_code_placeholder",
                "must contain the {{code}} placeholder",
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The message with its placeholders filled in.
    pub fn render(text: &str, app_name: &str, code: &str) -> String {
        text.replace("{{app_name}}", app_name)
            .replace("{{code}}", code)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event_type", content = "payload")]
pub enum VerifyTemplateEvent {
    #[serde(rename = "verify_template.created")]
    Created {
        template_id: Uuid,
        organization_id: Uuid,
        text: TemplateText,
    },
    #[serde(rename = "verify_template.updated")]
    Updated { text: TemplateText },
}

impl DomainEvent for VerifyTemplateEvent {
    fn event_types() -> &'static [&'static str] {
        &["verify_template.created", "verify_template.updated"]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyTemplate {
    pub id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub text: Option<TemplateText>,
}

impl Aggregate for VerifyTemplate {
    const STREAM_TYPE: &'static str = "verify_template";
    type Event = VerifyTemplateEvent;

    fn apply(&mut self, event: &VerifyTemplateEvent, _at: DateTime<Utc>) {
        match event {
            VerifyTemplateEvent::Created {
                template_id,
                organization_id,
                text,
            } => {
                self.id = Some(*template_id);
                self.organization_id = Some(*organization_id);
                self.text = Some(text.clone());
            }
            VerifyTemplateEvent::Updated { text } => self.text = Some(text.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyTemplateError {
    #[error("no such template")]
    NotFound,
    #[error("this template already exists")]
    AlreadyExists,
}

#[derive(Debug, Clone)]
pub enum VerifyTemplateCommand {
    Create {
        template_id: Uuid,
        organization_id: Uuid,
        text: TemplateText,
    },
    Update {
        organization_id: Uuid,
        text: TemplateText,
    },
}

pub fn decide(
    t: &VerifyTemplate,
    cmd: VerifyTemplateCommand,
    _ctx: &Ctx,
) -> Result<Vec<VerifyTemplateEvent>, VerifyTemplateError> {
    match cmd {
        VerifyTemplateCommand::Create {
            template_id,
            organization_id,
            text,
        } => {
            if t.id.is_some() {
                return Err(VerifyTemplateError::AlreadyExists);
            }
            Ok(vec![VerifyTemplateEvent::Created {
                template_id,
                organization_id,
                text,
            }])
        }
        VerifyTemplateCommand::Update {
            organization_id,
            text,
        } => {
            if t.id.is_none() || t.organization_id != Some(organization_id) {
                return Err(VerifyTemplateError::NotFound);
            }
            if t.text.as_ref() == Some(&text) {
                return Ok(vec![]);
            }
            Ok(vec![VerifyTemplateEvent::Updated { text }])
        }
    }
}
