//! The one table of OpenAI's ID-bearing resources: which families exist, where
//! their IDs sit in paths, which endpoints create, list or delete them, how
//! their objects are recognised in responses, and which body fields name them.
//!
//! Derived from OpenAI's API description (`openapi.yaml`, every path outside
//! `/organization` and `/projects`, which are never reachable). The `?beta=true`
//! variants of `/responses…` are the same paths with a query string, so the same
//! entries cover them. When OpenAI adds an endpoint to one of the groups below,
//! the gateway answers 404 for it until an entry is added here: inside these
//! groups an unknown path is refused, never forwarded unchecked.
//!
//! | family | id shape | created by | listed by |
//! |---|---|---|---|
//! | `file` | `file-…` | `POST /files`, completed uploads, batch `output_file_id`/`error_file_id` | `GET /files` (from the store) |
//! | `upload`, `upload_part` | `upload_…`, `part_…` | `POST /uploads`, `POST /uploads/{u}/parts` | — |
//! | `batch` | `batch_…` | `POST /batches` | `GET /batches` (from the store) |
//! | `assistant` | `asst_…` | `POST /assistants` | `GET /assistants` (from the store) |
//! | `thread`, `thread_message`, `run`, `run_step` | `thread_…`, `msg_…`, `run_…`, `step_…` | threads, messages, runs (incl. `POST /threads/runs`), run streams | nested lists (forwarded; children registered) |
//! | `vector_store`, `vector_store_file_batch` | `vs_…`, `vsfb_…` | `POST /vector_stores`, `…/file_batches` | `GET /vector_stores` (from the store) |
//! | `response`, `item` | `resp_…`, `msg_…`/`fc_…`/`rs_…` | `POST /responses` (output items too), `…/input_items`, conversation items | `…/input_items` (forwarded) |
//! | `conversation` | `conv_…` | `POST /conversations` | `…/items` (forwarded) |
//! | `chat_completion`, `chat_audio` | `chatcmpl-…`, `audio_…` | `POST /chat/completions` with `store: true` (audio replies too) | `GET /chat/completions` (from the store) |
//! | `fine_tuning_job`, `fine_tuning_checkpoint` | `ftjob-…`, `ftckpt_…` | `POST /fine_tuning/jobs`, checkpoint lists | `GET /fine_tuning/jobs` (from the store) |
//! | `container`, `container_file` | `cntr_…`, `cfile_…` | `POST /containers`, `…/files`, code-interpreter calls in responses | `GET /containers` (from the store) |
//! | `eval`, `eval_run`, `eval_output_item` | `eval_…`, `evalrun_…`, `outputitem_…` | `POST /evals`, `…/runs`, output-item lists | `GET /evals` (from the store) |
//! | `video`, `video_character` | `video_…`, `char_…` | `POST /videos` (and edits, extensions, remix), `POST /videos/characters` | `GET /videos` (from the store) |
//! | `skill` | `skill_…` | `POST /skills` | `GET /skills` (from the store) |
//! | `voice_consent`, `voice` | `cons_…`, `voice_…` | `POST /audio/voice_consents`, `POST /audio/voices` | `GET /audio/voice_consents` (from the store) |
//! | `realtime_call` | `rtc_…` | SIP / WebRTC (not through the gateway: use `allow_unmanaged_ids`) | — |
//! | `chatkit_session`, `chatkit_thread` | `cksess_…`, `cthr_…` | `POST /chatkit/sessions`; threads by ChatKit itself | `GET /chatkit/threads` (from the store) |
//!
//! Skill versions (`/skills/{s}/versions/{version}`) and checkpoint permissions
//! are addressed under an owned parent and carry no ID of their own worth
//! tracking; prompts (`prompt.id`) and ChatKit workflows are dashboard objects
//! shared by the whole organisation and are not families.

/// A kind of provider resource whose IDs the gateway tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Files (`file-…`).
    File,
    /// Multipart uploads (`upload_…`).
    Upload,
    /// Parts of an upload (`part_…`).
    UploadPart,
    /// Batches (`batch_…`).
    Batch,
    /// Assistants (`asst_…`).
    Assistant,
    /// Assistants threads (`thread_…`).
    Thread,
    /// Messages of a thread (`msg_…`).
    Message,
    /// Runs of a thread (`run_…`).
    Run,
    /// Steps of a run (`step_…`).
    RunStep,
    /// Vector stores (`vs_…`).
    VectorStore,
    /// File batches of a vector store (`vsfb_…`).
    VectorStoreFileBatch,
    /// Responses (`resp_…`).
    Response,
    /// Items of responses and conversations (`msg_…`, `fc_…`, `rs_…`, …).
    Item,
    /// Conversations (`conv_…`).
    Conversation,
    /// Stored chat completions (`chatcmpl-…`).
    ChatCompletion,
    /// Audio replies of chat completions, referenced by later turns (`audio_…`).
    ChatAudio,
    /// Fine-tuning jobs (`ftjob-…`).
    FineTuningJob,
    /// Checkpoints of a fine-tuning job (`ftckpt_…`).
    FineTuningCheckpoint,
    /// Code-interpreter containers (`cntr_…`).
    Container,
    /// Files of a container (`cfile_…`).
    ContainerFile,
    /// Evals (`eval_…`).
    Eval,
    /// Runs of an eval (`evalrun_…`).
    EvalRun,
    /// Output items of an eval run.
    EvalOutputItem,
    /// Videos (`video_…`).
    Video,
    /// Video characters.
    VideoCharacter,
    /// Skills (`skill_…`).
    Skill,
    /// Voice consents (`cons_…`).
    VoiceConsent,
    /// Custom voices (`voice_…`).
    Voice,
    /// Realtime SIP / WebRTC calls.
    RealtimeCall,
    /// ChatKit sessions (`cksess_…`).
    ChatkitSession,
    /// ChatKit threads (`cthr_…`).
    ChatkitThread,
}

/// Every family, for parsing and documentation.
pub const ALL: &[Family] = &[
    Family::File,
    Family::Upload,
    Family::UploadPart,
    Family::Batch,
    Family::Assistant,
    Family::Thread,
    Family::Message,
    Family::Run,
    Family::RunStep,
    Family::VectorStore,
    Family::VectorStoreFileBatch,
    Family::Response,
    Family::Item,
    Family::Conversation,
    Family::ChatCompletion,
    Family::ChatAudio,
    Family::FineTuningJob,
    Family::FineTuningCheckpoint,
    Family::Container,
    Family::ContainerFile,
    Family::Eval,
    Family::EvalRun,
    Family::EvalOutputItem,
    Family::Video,
    Family::VideoCharacter,
    Family::Skill,
    Family::VoiceConsent,
    Family::Voice,
    Family::RealtimeCall,
    Family::ChatkitSession,
    Family::ChatkitThread,
];

impl Family {
    /// The name stored in the `resources` table and used by `/admin/resources?family=`.
    pub fn as_str(self) -> &'static str {
        use Family::*;
        match self {
            File => "file",
            Upload => "upload",
            UploadPart => "upload_part",
            Batch => "batch",
            Assistant => "assistant",
            Thread => "thread",
            Message => "thread_message",
            Run => "run",
            RunStep => "run_step",
            VectorStore => "vector_store",
            VectorStoreFileBatch => "vector_store_file_batch",
            Response => "response",
            Item => "item",
            Conversation => "conversation",
            ChatCompletion => "chat_completion",
            ChatAudio => "chat_audio",
            FineTuningJob => "fine_tuning_job",
            FineTuningCheckpoint => "fine_tuning_checkpoint",
            Container => "container",
            ContainerFile => "container_file",
            Eval => "eval",
            EvalRun => "eval_run",
            EvalOutputItem => "eval_output_item",
            Video => "video",
            VideoCharacter => "video_character",
            Skill => "skill",
            VoiceConsent => "voice_consent",
            Voice => "voice",
            RealtimeCall => "realtime_call",
            ChatkitSession => "chatkit_session",
            ChatkitThread => "chatkit_thread",
        }
    }

    /// The family named `name` (as in [`Family::as_str`]).
    pub fn parse(name: &str) -> Option<Family> {
        ALL.iter().copied().find(|f| f.as_str() == name)
    }

    /// The family of a provider object by its `object` field.
    pub fn of_object(object: &str) -> Option<Family> {
        use Family::*;
        Some(match object {
            "file" => File,
            "upload" => Upload,
            "upload.part" => UploadPart,
            "batch" => Batch,
            "assistant" => Assistant,
            "thread" => Thread,
            "thread.message" => Message,
            "thread.run" => Run,
            "thread.run.step" => RunStep,
            "vector_store" => VectorStore,
            // The reference says `files_batch`; some servers say `file_batch`.
            "vector_store.files_batch" | "vector_store.file_batch" => VectorStoreFileBatch,
            "response" => Response,
            "conversation" => Conversation,
            "chat.completion" | "chat.completion.chunk" => ChatCompletion,
            "fine_tuning.job" => FineTuningJob,
            "fine_tuning.job.checkpoint" => FineTuningCheckpoint,
            "container" => Container,
            "container.file" => ContainerFile,
            "eval" => Eval,
            "eval.run" => EvalRun,
            "eval.run.output_item" => EvalOutputItem,
            "video" => Video,
            "skill" => Skill,
            "audio.voice_consent" => VoiceConsent,
            "audio.voice" => Voice,
            "chatkit.session" => ChatkitSession,
            "chatkit.thread" => ChatkitThread,
            _ => return None,
        })
    }

    /// The field of an object of this family that names its parent.
    pub fn parent_field(self) -> Option<&'static str> {
        use Family::*;
        match self {
            Message | Run => Some("thread_id"),
            RunStep | EvalOutputItem => Some("run_id"),
            VectorStoreFileBatch => Some("vector_store_id"),
            FineTuningCheckpoint => Some("fine_tuning_job_id"),
            ContainerFile => Some("container_id"),
            EvalRun => Some("eval_id"),
            UploadPart => Some("upload_id"),
            _ => None,
        }
    }
}

/// What a `GET` on an endpoint's path returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    /// Not a list.
    No,
    /// A top-level collection of the whole provider account: answered from the
    /// store (only the caller's IDs, each fetched fresh from the provider).
    /// The names are query parameters compared with the object's field of the
    /// same name (`metadata[key]` is always understood).
    Owned(Family, &'static [&'static str]),
    /// Children of an owned parent: forwarded; the IDs in it are registered to
    /// the parent's owner, and `after`/`before` must be owned.
    Children(Family),
    /// Forwarded as is (its parent is owned); `after`/`before`, when a family is
    /// given, must be owned IDs of that family.
    Passthrough(Option<Family>),
}

/// One endpoint of an ID-bearing group.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// Path below the API version. `{family}` segments are IDs of that family
    /// (see [`Family::as_str`]); `{_}` is a parameter that is not an ID.
    pub path: &'static str,
    /// `POST` here creates one resource of this family (its `id` is read from the response).
    pub creates: Option<Family>,
    /// What `GET` here returns.
    pub list: List,
    /// `DELETE` here deletes the resource named by the last ID (and its children).
    pub deletes: bool,
    /// The response is raw content (file bytes, video): nothing to read in it.
    pub opaque: bool,
}

const fn ep(path: &'static str) -> Endpoint {
    Endpoint {
        path,
        creates: None,
        list: List::No,
        deletes: false,
        opaque: false,
    }
}

const fn creates(path: &'static str, f: Family) -> Endpoint {
    Endpoint {
        creates: Some(f),
        ..ep(path)
    }
}

const fn collection(path: &'static str, f: Family, filters: &'static [&'static str]) -> Endpoint {
    Endpoint {
        creates: Some(f),
        list: List::Owned(f, filters),
        ..ep(path)
    }
}

const fn children(path: &'static str, f: Family, creates: bool) -> Endpoint {
    Endpoint {
        creates: if creates { Some(f) } else { None },
        list: List::Children(f),
        ..ep(path)
    }
}

const fn passthrough(path: &'static str, cursor: Option<Family>) -> Endpoint {
    Endpoint {
        list: List::Passthrough(cursor),
        ..ep(path)
    }
}

const fn deletes(path: &'static str) -> Endpoint {
    Endpoint {
        deletes: true,
        ..ep(path)
    }
}

const fn opaque(path: &'static str) -> Endpoint {
    Endpoint {
        opaque: true,
        ..ep(path)
    }
}

use Family as F;

/// Every endpoint of the ID-bearing groups. Literal paths come before the
/// parameterised paths they would otherwise match (`/threads/runs` before
/// `/threads/{thread}`); the first match wins.
pub const ENDPOINTS: &[Endpoint] = &[
    // Files and uploads.
    collection("/files", F::File, &["purpose"]),
    deletes("/files/{file}"),
    opaque("/files/{file}/content"),
    creates("/uploads", F::Upload),
    ep("/uploads/{upload}/cancel"),
    ep("/uploads/{upload}/complete"),
    creates("/uploads/{upload}/parts", F::UploadPart),
    // Batches.
    collection("/batches", F::Batch, &[]),
    ep("/batches/{batch}"),
    ep("/batches/{batch}/cancel"),
    // Assistants, threads, messages, runs, steps.
    collection("/assistants", F::Assistant, &[]),
    deletes("/assistants/{assistant}"),
    creates("/threads", F::Thread),
    creates("/threads/runs", F::Run),
    deletes("/threads/{thread}"),
    children("/threads/{thread}/messages", F::Message, true),
    deletes("/threads/{thread}/messages/{thread_message}"),
    children("/threads/{thread}/runs", F::Run, true),
    ep("/threads/{thread}/runs/{run}"),
    ep("/threads/{thread}/runs/{run}/cancel"),
    ep("/threads/{thread}/runs/{run}/submit_tool_outputs"),
    children("/threads/{thread}/runs/{run}/steps", F::RunStep, false),
    ep("/threads/{thread}/runs/{run}/steps/{run_step}"),
    // Vector stores. A vector store file's id is the file's id; deleting it
    // only detaches the file.
    collection("/vector_stores", F::VectorStore, &[]),
    deletes("/vector_stores/{vector_store}"),
    ep("/vector_stores/{vector_store}/search"),
    passthrough("/vector_stores/{vector_store}/files", Some(F::File)),
    ep("/vector_stores/{vector_store}/files/{file}"),
    opaque("/vector_stores/{vector_store}/files/{file}/content"),
    creates(
        "/vector_stores/{vector_store}/file_batches",
        F::VectorStoreFileBatch,
    ),
    ep("/vector_stores/{vector_store}/file_batches/{vector_store_file_batch}"),
    ep("/vector_stores/{vector_store}/file_batches/{vector_store_file_batch}/cancel"),
    passthrough(
        "/vector_stores/{vector_store}/file_batches/{vector_store_file_batch}/files",
        Some(F::File),
    ),
    // Responses (also `?beta=true`) and conversations.
    creates("/responses", F::Response),
    ep("/responses/input_tokens"),
    ep("/responses/compact"),
    deletes("/responses/{response}"),
    ep("/responses/{response}/cancel"),
    children("/responses/{response}/input_items", F::Item, false),
    creates("/conversations", F::Conversation),
    deletes("/conversations/{conversation}"),
    children("/conversations/{conversation}/items", F::Item, true),
    deletes("/conversations/{conversation}/items/{item}"),
    // Chat completions: stored ones (`store: true`) are resources.
    collection("/chat/completions", F::ChatCompletion, &["model"]),
    deletes("/chat/completions/{chat_completion}"),
    passthrough("/chat/completions/{chat_completion}/messages", None),
    // Fine-tuning.
    collection("/fine_tuning/jobs", F::FineTuningJob, &[]),
    ep("/fine_tuning/jobs/{fine_tuning_job}"),
    ep("/fine_tuning/jobs/{fine_tuning_job}/cancel"),
    ep("/fine_tuning/jobs/{fine_tuning_job}/pause"),
    ep("/fine_tuning/jobs/{fine_tuning_job}/resume"),
    children(
        "/fine_tuning/jobs/{fine_tuning_job}/checkpoints",
        F::FineTuningCheckpoint,
        false,
    ),
    passthrough("/fine_tuning/jobs/{fine_tuning_job}/events", None),
    passthrough(
        "/fine_tuning/checkpoints/{fine_tuning_checkpoint}/permissions",
        None,
    ),
    ep("/fine_tuning/checkpoints/{fine_tuning_checkpoint}/permissions/{_}"),
    ep("/fine_tuning/alpha/graders/run"),
    ep("/fine_tuning/alpha/graders/validate"),
    // Containers.
    collection("/containers", F::Container, &["name"]),
    deletes("/containers/{container}"),
    children("/containers/{container}/files", F::ContainerFile, true),
    deletes("/containers/{container}/files/{container_file}"),
    opaque("/containers/{container}/files/{container_file}/content"),
    // Evals.
    collection("/evals", F::Eval, &[]),
    deletes("/evals/{eval}"),
    children("/evals/{eval}/runs", F::EvalRun, true),
    deletes("/evals/{eval}/runs/{eval_run}"),
    children(
        "/evals/{eval}/runs/{eval_run}/output_items",
        F::EvalOutputItem,
        false,
    ),
    ep("/evals/{eval}/runs/{eval_run}/output_items/{eval_output_item}"),
    // Videos.
    collection("/videos", F::Video, &[]),
    creates("/videos/characters", F::VideoCharacter),
    ep("/videos/characters/{video_character}"),
    creates("/videos/edits", F::Video),
    creates("/videos/extensions", F::Video),
    deletes("/videos/{video}"),
    opaque("/videos/{video}/content"),
    creates("/videos/{video}/remix", F::Video),
    // Skills.
    collection("/skills", F::Skill, &[]),
    deletes("/skills/{skill}"),
    opaque("/skills/{skill}/content"),
    passthrough("/skills/{skill}/versions", None),
    ep("/skills/{skill}/versions/{_}"),
    opaque("/skills/{skill}/versions/{_}/content"),
    // Audio: the plain endpoints carry no IDs; consents and voices do.
    ep("/audio/speech"),
    ep("/audio/transcriptions"),
    ep("/audio/translations"),
    collection("/audio/voice_consents", F::VoiceConsent, &[]),
    deletes("/audio/voice_consents/{voice_consent}"),
    creates("/audio/voices", F::Voice),
    // Realtime: calls are created by SIP/WebRTC signalling, not registered here.
    ep("/realtime"),
    ep("/realtime/calls"),
    ep("/realtime/calls/{realtime_call}/accept"),
    ep("/realtime/calls/{realtime_call}/hangup"),
    ep("/realtime/calls/{realtime_call}/refer"),
    ep("/realtime/calls/{realtime_call}/reject"),
    ep("/realtime/client_secrets"),
    ep("/realtime/sessions"),
    ep("/realtime/transcription_sessions"),
    ep("/realtime/translations/client_secrets"),
    // ChatKit.
    creates("/chatkit/sessions", F::ChatkitSession),
    ep("/chatkit/sessions/{chatkit_session}/cancel"),
    collection("/chatkit/threads", F::ChatkitThread, &["user"]),
    deletes("/chatkit/threads/{chatkit_thread}"),
    passthrough("/chatkit/threads/{chatkit_thread}/items", None),
];

/// The endpoint groups (first path segments) the table covers. Inside them a
/// path that matches no entry is refused (404).
pub fn covers_group(group: &str) -> bool {
    INDEX.contains_key(group)
}

/// One segment of a template, parsed once.
#[derive(Debug, Clone, Copy)]
enum Seg {
    /// Must equal the path's segment.
    Literal(&'static str),
    /// `{_}`: any segment, not an ID.
    Any,
    /// `{family}`: an ID of that family (`None`: a name that is no family, which matches nothing).
    Id(Option<Family>),
}

/// A template split into segments (the first one, the group, is the index key).
#[derive(Debug)]
struct Template {
    endpoint: &'static Endpoint,
    rest: Vec<Seg>,
}

/// [`ENDPOINTS`] by group (first path segment), each group's templates in table
/// order. Built once: matching a request's path runs on every request in a
/// covered group, and splitting every template per request was a profiled hot spot.
static INDEX: std::sync::LazyLock<std::collections::HashMap<&'static str, Vec<Template>>> =
    std::sync::LazyLock::new(|| {
        let mut index: std::collections::HashMap<&'static str, Vec<Template>> =
            std::collections::HashMap::new();
        for endpoint in ENDPOINTS {
            let mut segs = endpoint.path.get(1..).unwrap_or("").split('/');
            let group = segs.next().unwrap_or("");
            let rest = segs
                .map(
                    |t| match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                        Some("_") => Seg::Any,
                        Some(name) => Seg::Id(Family::parse(name)),
                        None => Seg::Literal(t),
                    },
                )
                .collect();
            index
                .entry(group)
                .or_default()
                .push(Template { endpoint, rest });
        }
        index
    });

/// Body fields (at any depth) whose string or string-array value names
/// resources of a family. Objects under these keys are searched like any other.
pub const BODY_FIELDS: &[(&str, Family)] = &[
    ("file_id", F::File),
    ("file_ids", F::File),
    ("input_file_id", F::File),
    ("training_file", F::File),
    ("validation_file", F::File),
    ("assistant_id", F::Assistant),
    ("thread_id", F::Thread),
    ("vector_store_id", F::VectorStore),
    ("vector_store_ids", F::VectorStore),
    ("previous_response_id", F::Response),
    ("conversation", F::Conversation),
    ("conversation_id", F::Conversation),
    ("container", F::Container),
    ("container_id", F::Container),
    ("skill_id", F::Skill),
    ("part_ids", F::UploadPart),
    ("approval_request_id", F::Item),
];

/// Body fields whose object value's `id` names a resource: `conversation: {id}`,
/// `voice: {id}` (custom voices), `video: {id}` (edits, extensions) and a chat
/// message's `audio: {id}` (an earlier audio reply).
pub const BODY_OBJECT_IDS: &[(&str, Family)] = &[
    ("conversation", F::Conversation),
    ("voice", F::Voice),
    ("video", F::Video),
    ("audio", F::ChatAudio),
];

/// Objects recognised by their `type`, whose `id` names a resource:
/// `{"type": "item_reference", "id"}` (Responses input) and
/// `{"type": "file_id", "id"}` (eval data sources).
pub const TYPED_IDS: &[(&str, Family)] = &[("item_reference", F::Item), ("file_id", F::File)];

/// Body subtrees that are free-form data, never references: metadata,
/// attributes, JSON schemas, citations echoed from earlier outputs, search filters.
pub const OPAQUE_FIELDS: &[&str] = &[
    "metadata",
    "attributes",
    "annotations",
    "parameters",
    "schema",
    "json_schema",
    "input_schema",
    "filters",
    "logit_bias",
];

/// Groups whose top-level `input` / `items` arrays hold items that may carry
/// the `id` of an earlier item (replayed outputs, reasoning items).
pub const ITEM_GROUPS: &[&str] = &["responses", "conversations"];

/// Multipart form fields naming a resource (the last `[...]` part of a field
/// name is matched against [`BODY_FIELDS`] too, e.g. `input_reference[file_id]`).
pub const FORM_FIELDS: &[(&str, Family)] = &[("consent", F::VoiceConsent), ("video[id]", F::Video)];

/// Query parameters naming a resource, besides list cursors.
pub const QUERY_FIELDS: &[(&str, Family)] = &[("run_id", F::Run)];

/// Top-level body fields that could redirect or re-credential a call. The
/// gateway never reads them for routing, and removes them before forwarding
/// (from JSON bodies; keys starting with `litellm_` too).
pub const STRIPPED_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "api_type",
    "api_version",
    "organization",
    "project",
    "extra_headers",
    "extra_query",
    "extra_body",
    "headers",
    "default_headers",
    "default_query",
    "custom_llm_provider",
    "azure_endpoint",
    "azure_deployment",
    "azure_ad_token",
    "deployment_id",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "aws_profile_name",
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
    "region_name",
    "timeout",
    "max_retries",
    "http_client",
    "proxy",
    "proxies",
];

/// True if `key` is removed from forwarded JSON bodies.
pub fn is_stripped(key: &str) -> bool {
    STRIPPED_FIELDS.contains(&key) || key.starts_with("litellm_")
}

/// A path matched against [`ENDPOINTS`].
#[derive(Debug, Clone)]
pub struct Matched {
    /// The entry.
    pub endpoint: &'static Endpoint,
    /// The IDs in the path, outermost first, percent-decoded.
    pub ids: Vec<(Family, String)>,
}

/// Matches a raw path below the API version (`/threads/t/runs/r/steps`,
/// no query) against the table. IDs are percent-decoded, because the
/// provider decodes them; a segment that does not decode to UTF-8 matches nothing.
pub fn match_path(rest: &str) -> Option<Matched> {
    let mut segs = rest.strip_prefix('/')?.split('/');
    let templates = INDEX.get(segs.next()?)?;
    let segs: Vec<&str> = segs.collect();
    'entries: for t in templates {
        if t.rest.len() != segs.len() {
            continue;
        }
        let mut ids = Vec::new();
        for (seg, s) in t.rest.iter().zip(&segs) {
            match *seg {
                Seg::Any => {}
                Seg::Id(family) => ids.push((family?, percent_decode(s)?)),
                Seg::Literal(l) if l == *s => {}
                Seg::Literal(_) => continue 'entries,
            }
        }
        return Some(Matched {
            endpoint: t.endpoint,
            ids,
        });
    }
    None
}

/// Decodes `%XX` escapes; `None` for malformed escapes or non-UTF-8 results.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn every_template_names_known_families() {
        for e in ENDPOINTS {
            for seg in e.path[1..].split('/') {
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    assert!(
                        name == "_" || Family::parse(name).is_some(),
                        "{}: unknown family {name}",
                        e.path
                    );
                }
            }
            if e.deletes {
                assert!(e.path.ends_with('}'), "{} deletes nothing", e.path);
            }
        }
        for f in ALL {
            assert_eq!(Family::parse(f.as_str()), Some(*f));
        }
    }

    /// The table scan `match_path` replaced: first entry in table order whose
    /// template fits.
    fn match_path_by_scan(rest: &str) -> Option<Matched> {
        let segs: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
        'entries: for e in ENDPOINTS {
            let tpl = &e.path[1..];
            if tpl.split('/').count() != segs.len() {
                continue;
            }
            let mut ids = Vec::new();
            for (t, s) in tpl.split('/').zip(&segs) {
                match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                    Some("_") => {}
                    Some(name) => ids.push((Family::parse(name)?, percent_decode(s)?)),
                    None if t == *s => {}
                    None => continue 'entries,
                }
            }
            return Some(Matched { endpoint: e, ids });
        }
        None
    }

    #[test]
    fn index_matches_like_the_table_scan() {
        let mut paths = vec![
            "/".to_owned(),
            "".to_owned(),
            "/embeddings".to_owned(),
            "/files/a/b/c".to_owned(),
            "/files/x%ZZ".to_owned(),
        ];
        for e in ENDPOINTS {
            // Every template with its parameters filled in, and with a literal
            // where an ID goes (literals must win in table order).
            paths.push(e.path.replace('{', "id_").replace('}', ""));
            paths.push(
                e.path
                    .split('/')
                    .map(|s| if s.starts_with('{') { "runs" } else { s })
                    .collect::<Vec<_>>()
                    .join("/"),
            );
            paths.push(format!("{}/extra", e.path.replace(['{', '}'], "")));
        }
        for p in &paths {
            let (a, b) = (match_path(p), match_path_by_scan(p));
            assert_eq!(
                a.as_ref().map(|m| (m.endpoint.path, m.ids.clone())),
                b.as_ref().map(|m| (m.endpoint.path, m.ids.clone())),
                "{p}"
            );
            let group = p.get(1..).and_then(|r| r.split('/').next()).unwrap_or("");
            assert_eq!(
                covers_group(group),
                ENDPOINTS
                    .iter()
                    .any(|e| e.path[1..].split('/').next() == Some(group)),
                "{group}"
            );
        }
    }

    #[test]
    fn matches_nested_paths_and_literals_first() {
        let m = match_path("/threads/thread_1/runs/run_2/steps/step_3").unwrap();
        assert_eq!(
            m.ids,
            vec![
                (Family::Thread, "thread_1".into()),
                (Family::Run, "run_2".into()),
                (Family::RunStep, "step_3".into())
            ]
        );
        let m = match_path("/threads/runs").unwrap();
        assert!(m.ids.is_empty());
        assert_eq!(m.endpoint.creates, Some(Family::Run));
        let m = match_path("/files/file%2Dabc/content").unwrap();
        assert_eq!(m.ids, vec![(Family::File, "file-abc".into())]);
        assert!(m.endpoint.opaque);
        assert!(match_path("/files/a/b/c").is_none());
        assert!(match_path("/embeddings").is_none());
        assert!(covers_group("threads") && covers_group("chat") && !covers_group("embeddings"));
        let m = match_path("/skills/skill_1/versions/3").unwrap();
        assert_eq!(m.ids, vec![(Family::Skill, "skill_1".into())]);
    }
}
