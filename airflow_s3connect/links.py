"""Extra link from a task to the AWS console, at the bucket and prefix it worked on."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from airflow_s3connect._compat import BaseOperatorLink, XCom

#: XCom key under which operators store where they worked (only when on AWS itself).
CONSOLE_XCOM_KEY = "s3connect_console"


def console_url(bucket: str, prefix: str, region: str | None) -> str:
    query = {"prefix": prefix, "showversions": "false"}
    if region:
        query["region"] = region
    return f"https://s3.console.aws.amazon.com/s3/buckets/{quote(bucket)}?{urlencode(query)}"


class S3ConsoleLink(BaseOperatorLink):
    """ "S3 Console": shown for connections without a custom endpoint (the console knows only AWS)."""

    name = "S3 Console"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        where = XCom.get_value(key=CONSOLE_XCOM_KEY, ti_key=ti_key)
        if not where:
            return ""
        return console_url(where["bucket"], where.get("prefix", ""), where.get("region"))
