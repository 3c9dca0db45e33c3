# mentorpulse daemon image: `docker run -v $PWD/config:/config mentorpulse run`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MENTORPULSE_CONFIG=/config/mentorpulse.yaml \
    MENTORPULSE_DATA=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY mentorpulse ./mentorpulse
RUN pip install --no-cache-dir . && useradd --system --home /data mentorpulse \
    && mkdir -p /data && chown mentorpulse /data
USER mentorpulse
WORKDIR /data
VOLUME ["/config", "/data"]
ENTRYPOINT ["mentorpulse"]
CMD ["run"]
