"""Timestamps of S3 answers are read as botocore reads them, without dateutil."""

from __future__ import annotations

import datetime
import email.utils

import botocore.utils
from hypothesis import given
from hypothesis import strategies as st

from airflow_s3connect.client import parse_timestamp
from tests.conftest import BUCKET, REGION
from tests.support.moto_server import MotoServer
from tests.support.stores import endpoint_client

MOMENTS = st.datetimes(min_value=datetime.datetime(1970, 1, 2), max_value=datetime.datetime(2200, 1, 1)).map(
    lambda moment: moment.replace(tzinfo=datetime.timezone.utc)
)


@given(MOMENTS)
def test_listing_and_header_formats_parse_as_botocore_parses_them(moment: datetime.datetime) -> None:
    listed = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"  # ListObjectsV2
    header = email.utils.format_datetime(moment.replace(microsecond=0), usegmt=True)  # Last-Modified
    for text in (listed, header, moment.isoformat()):
        ours, botocores = parse_timestamp(text), botocore.utils.parse_timestamp(text)
        assert ours == botocores
        assert ours.utcoffset() == datetime.timedelta(0)


def test_other_forms_fall_back_to_botocore() -> None:
    assert parse_timestamp(1700000000) == botocore.utils.parse_timestamp(1700000000)
    assert parse_timestamp("20250414T060000Z") == botocore.utils.parse_timestamp("20250414T060000Z")


def test_our_clients_read_listings_and_heads_with_it(moto: MotoServer) -> None:
    moto.admin_client("s3").put_object(Bucket=BUCKET, Key="t.txt", Body=b"t")
    client = endpoint_client(moto.url, region=REGION)
    listed = client.list_objects_v2(Bucket=BUCKET)["Contents"][0]["LastModified"]
    headed = client.head_object(Bucket=BUCKET, Key="t.txt")["LastModified"]
    # dateutil's parser answers tzutc(); ours the standard library's UTC.
    assert listed.tzinfo is datetime.timezone.utc
    assert headed.tzinfo is datetime.timezone.utc
    assert headed == listed.replace(microsecond=0)
