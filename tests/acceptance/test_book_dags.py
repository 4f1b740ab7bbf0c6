"""DAG files in the style of "Data Pipelines with Apache Airflow" (Airflow 2 imports and
idioms: rocket launches, templated Wikipedia pageviews, branching between two ERP
systems, a custom hook and operator), taken through `dagwatch dags migrate --write` and
`dagwatch dags test`, with their data served on loopback."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from tests.helpers import run_cli

ROCKETS = """\
import json
import pathlib

import airflow.utils.dates
import requests
import requests.exceptions as requests_exceptions
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

OUT = "__OUT__"

dag = DAG(
    dag_id="download_rocket_launches",
    description="Download rocket pictures of recently launched rockets.",
    start_date=airflow.utils.dates.days_ago(14),
    schedule_interval="@daily",
)

download_launches = BashOperator(
    task_id="download_launches",
    bash_command=f"curl -sf -o {OUT}/launches.json -L '__URL__/launches'",
    dag=dag,
)


def _get_pictures():
    pathlib.Path(f"{OUT}/images").mkdir(parents=True, exist_ok=True)
    with open(f"{OUT}/launches.json") as f:
        launches = json.load(f)
    for image_url in [launch["image"] for launch in launches["results"]]:
        try:
            response = requests.get(image_url)
            response.raise_for_status()
            target = f"{OUT}/images/" + image_url.split("/")[-1]
            with open(target, "wb") as f:
                f.write(response.content)
            print(f"Downloaded {image_url} to {target}")
        except requests_exceptions.MissingSchema:
            print(f"{image_url} appears to be an invalid URL.")


get_pictures = PythonOperator(task_id="get_pictures", python_callable=_get_pictures, dag=dag)

notify = BashOperator(
    task_id="notify",
    bash_command=f'echo "There are now $(ls {OUT}/images/ | wc -l) images." > {OUT}/notify.txt',
    dag=dag,
)

download_launches >> get_pictures >> notify
"""

PAGEVIEWS = """\
from urllib import request

import airflow.utils.dates
from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import PythonOperator

OUT = "__OUT__"

dag = DAG(
    dag_id="stocksense",
    start_date=airflow.utils.dates.days_ago(1),
    schedule_interval="@hourly",
)


def _get_data(year, month, day, hour, output_path, **_):
    url = (
        "__URL__/pageviews/"
        f"{year}/{year}-{month:0>2}/pageviews-{year}{month:0>2}{day:0>2}-{hour:0>2}0000.gz"
    )
    request.urlretrieve(url, output_path)


get_data = PythonOperator(
    task_id="get_data",
    python_callable=_get_data,
    op_kwargs={
        "year": "{{ execution_date.year }}",
        "month": "{{ execution_date.month }}",
        "day": "{{ execution_date.day }}",
        "hour": "{{ execution_date.hour }}",
        "output_path": OUT + "/wikipageviews.gz",
    },
    provide_context=True,
    dag=dag,
)

extract_gz = BashOperator(
    task_id="extract_gz", bash_command=f"gunzip --force {OUT}/wikipageviews.gz", dag=dag
)


def _fetch_pageviews(pagenames, execution_date, **_):
    result = dict.fromkeys(pagenames, 0)
    with open(f"{OUT}/wikipageviews") as f:
        for line in f:
            domain_code, page_title, view_counts, _ = line.split(" ")
            if domain_code == "en" and page_title in pagenames:
                result[page_title] = int(view_counts)
    with open(f"{OUT}/pageviews.json", "w") as f:
        f.write(json.dumps({"at": str(execution_date), "views": result}))


import json  # noqa: E402  (as the listing had it, after the task)

fetch_pageviews = PythonOperator(
    task_id="fetch_pageviews",
    python_callable=_fetch_pageviews,
    op_kwargs={"pagenames": {"Google", "Amazon", "Apple", "Microsoft", "Facebook"}},
    dag=dag,
)

get_data >> extract_gz >> fetch_pageviews
"""

BRANCHING = """\
import airflow
from airflow import DAG
from airflow.operators.dummy import DummyOperator
from airflow.operators.python import BranchPythonOperator, PythonOperator

ERP_CHANGE_DATE = airflow.utils.dates.days_ago(1)


def _pick_erp_system(**context):
    if context["execution_date"] < ERP_CHANGE_DATE:
        return "fetch_sales_old"
    else:
        return "fetch_sales_new"


def _fetch_sales_old(**context):
    print("Fetching sales data (OLD)...")


def _fetch_sales_new(**context):
    print("Fetching sales data (NEW)...")


with DAG(
    dag_id="03_branch_dag",
    start_date=airflow.utils.dates.days_ago(3),
    schedule_interval="@daily",
) as dag:
    start = DummyOperator(task_id="start")
    pick_erp_system = BranchPythonOperator(
        task_id="pick_erp_system", python_callable=_pick_erp_system
    )
    fetch_sales_old = PythonOperator(task_id="fetch_sales_old", python_callable=_fetch_sales_old)
    clean_sales_old = DummyOperator(task_id="clean_sales_old")
    fetch_sales_new = PythonOperator(task_id="fetch_sales_new", python_callable=_fetch_sales_new)
    clean_sales_new = DummyOperator(task_id="clean_sales_new")
    fetch_weather = DummyOperator(task_id="fetch_weather")
    clean_weather = DummyOperator(task_id="clean_weather")
    join_datasets = DummyOperator(task_id="join_datasets", trigger_rule="none_failed")
    train_model = DummyOperator(task_id="train_model")
    deploy_model = DummyOperator(task_id="deploy_model")

    start >> [pick_erp_system, fetch_weather]
    pick_erp_system >> [fetch_sales_old, fetch_sales_new]
    fetch_sales_old >> clean_sales_old
    fetch_sales_new >> clean_sales_new
    fetch_weather >> clean_weather
    [clean_sales_old, clean_sales_new, clean_weather] >> join_datasets
    join_datasets >> train_model >> deploy_model
"""

MOVIELENS_HOOK = '''\
"""Custom hook and operator for the MovieLens API (chapter 8 style)."""
import json
import os

import requests
from airflow.hooks.base_hook import BaseHook
from airflow.models import BaseOperator
from airflow.utils.decorators import apply_defaults


class MovielensHook(BaseHook):
    DEFAULT_SCHEMA = "http"
    DEFAULT_PORT = 5000

    def __init__(self, conn_id, retry=3):
        super().__init__()
        self._conn_id = conn_id
        self._retry = retry
        self._session = None
        self._base_url = None

    def get_conn(self):
        if self._session is None:
            config = self.get_connection(self._conn_id)
            schema = config.schema or self.DEFAULT_SCHEMA
            port = config.port or self.DEFAULT_PORT
            self._base_url = f"{schema}://{config.host}:{port}"
            self._session = requests.Session()
            if config.login:
                self._session.auth = (config.login, config.password)
        return self._session, self._base_url

    def close(self):
        if self._session:
            self._session.close()
        self._session = None
        self._base_url = None

    def get_ratings(self, start_date=None, end_date=None, batch_size=100):
        yield from self._get_with_pagination(
            endpoint="/ratings",
            params={"start_date": start_date, "end_date": end_date},
            batch_size=batch_size,
        )

    def _get_with_pagination(self, endpoint, params, batch_size=100):
        session, base_url = self.get_conn()
        offset, total = 0, None
        while total is None or offset < total:
            response = session.get(
                base_url + endpoint, params={**params, "offset": offset, "limit": batch_size}
            )
            response.raise_for_status()
            payload = response.json()
            self.log.info("fetched %d ratings at offset %d", len(payload["result"]), offset)
            yield from payload["result"]
            offset += batch_size
            total = payload["total"]


class MovielensFetchRatingsOperator(BaseOperator):
    template_fields = ("_start_date", "_end_date", "_output_path")

    @apply_defaults
    def __init__(
        self,
        conn_id,
        output_path,
        start_date="{{ds}}",
        end_date="{{next_ds}}",
        batch_size=1000,
        **kwargs,
    ):
        super(MovielensFetchRatingsOperator, self).__init__(**kwargs)
        self._conn_id = conn_id
        self._output_path = output_path
        self._start_date = start_date
        self._end_date = end_date
        self._batch_size = batch_size

    def execute(self, context):
        hook = MovielensHook(self._conn_id)
        try:
            self.log.info(f"Fetching ratings for {self._start_date} to {self._end_date}")
            ratings = list(
                hook.get_ratings(
                    start_date=self._start_date,
                    end_date=self._end_date,
                    batch_size=self._batch_size,
                )
            )
            self.log.info(f"Fetched {len(ratings)} ratings")
        finally:
            hook.close()
        os.makedirs(os.path.dirname(self._output_path), exist_ok=True)
        with open(self._output_path, "w") as file_:
            json.dump(ratings, fp=file_)
'''

MOVIELENS_DAG = """\
import datetime as dt

from airflow import DAG
from airflow.operators.python import PythonOperator

from movielens_custom import MovielensFetchRatingsOperator

OUT = "__OUT__"


def _rank_movies(templates_dict, **_):
    import json
    import os

    with open(templates_dict["input_path"]) as f:
        ratings = json.load(f)
    counts = {}
    for rating in ratings:
        counts[rating["movieId"]] = counts.get(rating["movieId"], 0) + 1
    os.makedirs(os.path.dirname(templates_dict["output_path"]), exist_ok=True)
    with open(templates_dict["output_path"], "w") as f:
        json.dump(sorted(counts.items(), key=lambda kv: -kv[1]), f)


with DAG(
    dag_id="04_operator",
    description="Fetches ratings from the Movielens API using a custom operator.",
    start_date=dt.datetime(2019, 1, 1),
    end_date=dt.datetime(2019, 1, 10),
    schedule_interval="@daily",
) as dag:
    fetch_ratings = MovielensFetchRatingsOperator(
        task_id="fetch_ratings",
        conn_id="movielens",
        start_date="{{ds}}",
        end_date="{{next_ds}}",
        output_path=OUT + "/ratings/{{ds}}.json",
        batch_size=2,
    )
    rank_movies = PythonOperator(
        task_id="rank_movies",
        python_callable=_rank_movies,
        templates_dict={
            "input_path": OUT + "/ratings/{{ds}}.json",
            "output_path": OUT + "/rankings/{{ds}}.json",
        },
    )
    fetch_ratings >> rank_movies
"""

RATINGS = [
    {"movieId": 1, "userId": 10, "rating": 4.0, "timestamp": "2019-01-03"},
    {"movieId": 2, "userId": 11, "rating": 3.5, "timestamp": "2019-01-03"},
    {"movieId": 1, "userId": 12, "rating": 5.0, "timestamp": "2019-01-03"},
    {"movieId": 3, "userId": 13, "rating": 2.0, "timestamp": "2019-01-03"},
    {"movieId": 1, "userId": 14, "rating": 4.5, "timestamp": "2019-01-03"},
]
PAGEVIEWS_DATA = "en Google 500 0\nen Amazon 300 0\nen Apple 200 0\nnl Google 7 0\nen Zebra 1 0\n"


class _Site:
    """The data the listings download, served on loopback; records what was asked."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _routes(self, path: str, query: dict, headers) -> tuple[int, bytes, str]:
        if path == "/launches":
            images = [{"image": f"{self.url}/images/rocket_{i}.png"} for i in range(3)]
            return 200, json.dumps({"results": images}).encode(), "application/json"
        if path.startswith("/images/"):
            return 200, b"\x89PNG fake " + path.encode(), "image/png"
        if path == "/pageviews/2024/2024-03/pageviews-20240305-070000.gz":
            return 200, gzip.compress(PAGEVIEWS_DATA.encode()), "application/gzip"
        if path == "/ratings":
            expected = "Basic " + base64.b64encode(b"airflow:airflow").decode()
            if headers.get("Authorization") != expected:
                return 401, b"unauthorized", "text/plain"
            if (query.get("start_date"), query.get("end_date")) != (["2019-01-03"], ["2019-01-04"]):
                return 400, b"unexpected dates", "text/plain"
            offset, limit = int(query["offset"][0]), int(query["limit"][0])
            page = {"result": RATINGS[offset : offset + limit], "total": len(RATINGS)}
            return 200, json.dumps(page).encode(), "application/json"
        return 404, b"not found", "text/plain"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urlparse(self.path)
                site.requests.append(parsed.path)
                status, body, kind = site._routes(parsed.path, parse_qs(parsed.query), self.headers)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def site():
    served = _Site()
    served.thread.start()
    yield served
    served.server.shutdown()
    served.server.server_close()


@pytest.fixture
def book(cli_env, home, tmp_path, site):
    """The listings in the DAG folder, migrated with `dags migrate --write`."""
    out = tmp_path / "out"
    out.mkdir()
    dags = home / "dags"
    dags.mkdir()
    files = {
        "download_rocket_launches.py": ROCKETS,
        "stocksense_dag.py": PAGEVIEWS,
        "branch_dag.py": BRANCHING,
        "movielens_custom.py": MOVIELENS_HOOK,
        "movielens_operator_dag.py": MOVIELENS_DAG,
    }
    for name, text in files.items():
        (dags / name).write_text(text.replace("__OUT__", str(out)).replace("__URL__", site.url))
    port = site.url.rsplit(":", 1)[1]
    env = {
        **cli_env,
        "DAGWATCH__CORE__LOAD_EXAMPLES": "false",
        "DAGWATCH_CONN_MOVIELENS": f"http://airflow:airflow@127.0.0.1:{port}/http",
    }
    assert run_cli("db", "migrate", env=env).returncode == 0
    migrated = run_cli("dags", "migrate", "--write", str(dags), env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert sorted(Path(line.split()[-1]).name for line in migrated.stdout.splitlines()) == sorted(
        files
    )
    assert not any("airflow" in (dags / n).read_text().split("OUT =")[0] for n in files)
    return env, out


def _dags_test(env, dag_id: str, logical_date: str) -> dict[str, str]:
    """Run the DAG with `dags test`; every task's final state, from the CLI."""
    result = run_cli("dags", "test", dag_id, "--logical-date", logical_date, env=env, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    run_id = result.stdout.splitlines()[0].split()[1]  # "run <run_id> of <dag_id>"
    listing = run_cli("tasks", "states-for-dag-run", dag_id, run_id, "-o", "json", env=env)
    return {row["task_id"]: row["state"] for row in json.loads(listing.stdout)}


@pytest.mark.slow
def test_book_listings_run_after_dags_migrate(book, site):
    env, out = book
    states = _dags_test(env, "download_rocket_launches", "2024-03-05")
    assert states == dict.fromkeys(["download_launches", "get_pictures", "notify"], "success")
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"rocket_{i}.png" for i in range(3)
    ]
    assert (out / "notify.txt").read_text() == "There are now 3 images.\n"

    states = _dags_test(env, "stocksense", "2024-03-05T07:00:00+00:00")
    assert states == dict.fromkeys(["get_data", "extract_gz", "fetch_pageviews"], "success")
    assert "/pageviews/2024/2024-03/pageviews-20240305-070000.gz" in site.requests
    report = json.loads((out / "pageviews.json").read_text())
    assert report == {
        "at": "2024-03-05T07:00:00+00:00",
        "views": {"Google": 500, "Amazon": 300, "Apple": 200, "Microsoft": 0, "Facebook": 0},
    }

    states = _dags_test(env, "03_branch_dag", "2024-03-05")
    skipped = {"fetch_sales_new", "clean_sales_new"}
    assert states == {
        task: "skipped" if task in skipped else "success"
        for task in [
            "start", "pick_erp_system", "fetch_weather", "fetch_sales_old", "fetch_sales_new",
            "clean_weather", "clean_sales_old", "clean_sales_new", "join_datasets",
            "train_model", "deploy_model",
        ]
    }  # fmt: skip

    states = _dags_test(env, "04_operator", "2019-01-03")
    assert states == {"fetch_ratings": "success", "rank_movies": "success"}
    assert json.loads((out / "ratings" / "2019-01-03.json").read_text()) == RATINGS
    assert json.loads((out / "rankings" / "2019-01-03.json").read_text()) == [
        [1, 3],
        [2, 1],
        [3, 1],
    ]
    assert site.requests.count("/ratings") == 3  # pages of 2
