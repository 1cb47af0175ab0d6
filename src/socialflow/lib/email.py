"""Sending email: SMTP (host, port, TLS, credentials from settings) or, in dev, files on disk."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from socialflow.settings import Settings


def build_message(settings: Settings, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.email_from
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<{uuid.uuid4()}@socialflow>"
    message.set_content(body)
    return message


async def send_email(settings: Settings, to: str, subject: str, body: str) -> None:
    message = build_message(settings, to, subject, body)
    if settings.email_backend == "file":
        folder = settings.data_dir / "mail"
        await asyncio.to_thread(_write, folder, message)
    else:
        await asyncio.to_thread(_send_smtp, settings, message)


def _write(folder: Path, message: EmailMessage) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.eml").write_bytes(bytes(message))


def _send_smtp(settings: Settings, message: EmailMessage) -> None:
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.smtp_security == "ssl":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port, context=context, timeout=30)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        smtp.send_message(message)
