"""The connection form on Airflow lines without declarative fields (3.0 and 3.1).

Those lines build the form from the hook's ``get_connection_form_widgets`` (WTForms
fields, which the UI turns into a JSON schema without needing FAB installed) and
``get_ui_field_behaviour``. Both are generated here from :data:`~airflow_s3connect.connection.FIELDS`
and :data:`~airflow_s3connect.connection.UI_FIELD_BEHAVIOUR`, the table the 3.2+ form and
the settings parser read: one list of fields for every line. From 3.2 on, Airflow reads the
provider's ``conn-fields`` and never calls these.
"""

from __future__ import annotations

from typing import Any

from airflow_s3connect.connection import FIELDS, UI_FIELD_BEHAVIOUR


def form_widgets() -> dict[str, Any]:
    """One WTForms field per connection field: type, label, help text, default and choices.

    Imported inside: the UI of Airflow 3.0/3.1 replaces these modules with stand-ins while
    it calls this, and a worker never does."""
    from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, IntegerField, PasswordField, StringField
    from wtforms.validators import Optional, any_of

    widgets: dict[str, Any] = {}
    for spec in FIELDS:
        schema = spec.schema
        common = {"description": spec.description, "default": schema.get("default")}
        label = lazy_gettext(spec.label)
        if schema["type"] == "boolean":
            widgets[spec.name] = BooleanField(label, **common)
        elif schema["type"] == "integer":
            widgets[spec.name] = IntegerField(label, validators=[Optional()], widget=BS3TextFieldWidget(), **common)
        elif schema.get("format") == "password":
            widgets[spec.name] = PasswordField(label, widget=BS3PasswordFieldWidget(), **common)
        else:
            choices = [any_of(schema["enum"])] if "enum" in schema else []
            widgets[spec.name] = StringField(
                label, validators=[Optional(), *choices], widget=BS3TextFieldWidget(), **common
            )
    return widgets


def field_behaviour() -> dict[str, Any]:
    """The standard fields' behaviour (hidden, relabelled, placeholders), in the hook
    method's spelling of the provider metadata's keys."""
    return {name.replace("-", "_"): value for name, value in UI_FIELD_BEHAVIOUR.items()}
