/** One error shape for every route: FerryErrors as they are, schema failures as 400 naming the field. */
import type { FastifyError, FastifyInstance } from 'fastify';
import { FerryError, type FerryErrorBody } from '../errors.js';

interface ValidationIssue {
  instancePath?: string;
  params?: { missingProperty?: string; additionalProperty?: string };
  message?: string;
}

function fieldOf(issue: ValidationIssue): string {
  const fromPath = (issue.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
  const extra = issue.params?.missingProperty ?? issue.params?.additionalProperty;
  return [fromPath, extra].filter(Boolean).join('.') || 'body';
}

export function validationError(err: FastifyError): FerryError {
  const issue = (err.validation?.[0] ?? {}) as ValidationIssue;
  const field = fieldOf(issue);
  const where = err.validationContext ?? 'request';
  const why = issue.params?.additionalProperty ? 'is not a known field' : (issue.message ?? 'is invalid');
  return new FerryError('bad_request', `${where} field '${field}' ${why}`, {
    hint: 'see GET /openapi.json for the request schema',
    details: { field, in: where },
  });
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, req, reply) => {
    let ferry: FerryError;
    if (err instanceof FerryError) ferry = err;
    else if (err.validation) ferry = validationError(err);
    else if (err.statusCode && err.statusCode < 500) {
      ferry = new FerryError('bad_request', err.message, { details: { fastifyCode: err.code } });
    } else {
      req.log.error({ err }, 'unhandled error');
      ferry = new FerryError('internal', `internal error: ${err.message}`, { hint: 'see the agent log' });
    }
    const body: FerryErrorBody = ferry.toJSON();
    void reply.status(ferry.status).send(body);
  });
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ code: 'not_found', message: `no route ${req.method} ${req.url}`, hint: 'see GET /openapi.json' });
  });
}
