"""APScheduler wiring: send-at, recurring announcements, quiet hours, expiry.

The database is the source of truth; APScheduler only decides *when* this process looks at
it. Modules:

- ``tables``: the scheduler's tables (imported here so they are always registered);
- ``validation``: field-naming checks for send-at, expiry, cron and time zones;
- ``cron``: standard crontab -> APScheduler ``CronTrigger`` (Sunday is 0, as in cron);
- ``planning``: pure functions deciding the next wake-up and the occurrences to issue;
- ``recurrence``: recurring announcements in storage (attach, approve, issue, cancel);
- ``series``: an announcement's place in a series, for the API;
- ``sendat``: reading and changing an announcement's send time;
- ``service``: ``WartaScheduler`` and ``scheduler_ctx`` for the app's ``cleanup_ctx``.
"""

from scheduler import tables as tables
